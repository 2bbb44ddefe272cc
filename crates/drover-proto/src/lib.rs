//! The gRPC wire types and service stubs, generated at build time from `proto/`: the
//! node-registry contract's `orchion.v1` (its node agents' API, field for field) and drover's
//! own `drover.v1`. Wire types only, as `drover-api` is for HTTP: the server's gRPC surface
//! translates between these and the domain.

pub mod orchion {
    pub mod v1 {
        tonic::include_proto!("orchion.v1");
    }
}

pub mod drover {
    pub mod v1 {
        tonic::include_proto!("drover.v1");
    }
}

/// The encoded descriptor set of every file in `proto/`, for server reflection.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    /// Each message's fields as (name, number), from the compiled descriptors.
    fn fields(message: &str) -> Vec<(String, i32)> {
        let set = FileDescriptorSet::decode(super::DESCRIPTORS).unwrap();
        let (package, name) = message.rsplit_once('.').unwrap();
        let file = (set.file.iter())
            .find(|f| f.package() == package && f.message_type.iter().any(|m| m.name() == name))
            .unwrap_or_else(|| panic!("no message {message}"));
        let m = file.message_type.iter().find(|m| m.name() == name).unwrap();
        m.field
            .iter()
            .map(|f| (f.name().to_string(), f.number()))
            .collect()
    }

    fn numbered(names: &[&str]) -> Vec<(String, i32)> {
        (names.iter().zip(1..))
            .map(|(n, i)| (n.to_string(), i))
            .collect()
    }

    /// The node-registry contract's agents send these numbers: they may never change.
    #[test]
    fn the_contracts_field_numbers_are_kept() {
        assert_eq!(
            fields("orchion.v1.Capabilities"),
            numbered(&[
                "cpu",
                "memory",
                "os",
                "gpu_type",
                "gpu_vram_total",
                "gpu_vram_available",
                "power_usage",
                "gpu_vram_used",
                "gpu_temperature",
                "gpu_power_usage",
            ])
        );
        assert_eq!(
            fields("orchion.v1.Node"),
            numbered(&[
                "id",
                "hostname",
                "capabilities",
                "last_seen_unix",
                "agent_address"
            ])
        );
        assert_eq!(
            fields("orchion.v1.UpdateNodeRequest"),
            numbered(&["node_id", "capabilities"])
        );
        assert_eq!(
            fields("orchion.v1.SubmitJobRequest"),
            numbered(&["job_id", "job_type", "payload"])
        );
        assert_eq!(
            fields("orchion.v1.GetJobStatusResponse"),
            numbered(&[
                "job_id",
                "status",
                "assigned_node",
                "error_message",
                "result"
            ])
        );
    }

    #[test]
    fn the_services_have_the_contracts_methods() {
        let set = FileDescriptorSet::decode(super::DESCRIPTORS).unwrap();
        let service = (set.file.iter())
            .flat_map(|f| f.service.iter().map(move |s| (f.package(), s)))
            .find(|(p, s)| *p == "orchion.v1" && s.name() == "Orchestrator")
            .unwrap()
            .1;
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(
            methods,
            [
                "RegisterNode",
                "UpdateNode",
                "Heartbeat",
                "ListNodes",
                "SubmitJob",
                "GetJobStatus"
            ]
        );
    }
}
