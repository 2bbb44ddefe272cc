//! Who may act for a spot or a runner, and what the server shows of a job's secrets.
//!
//! A spot that asks for it at registration gets a secret of its own (as a Nomad client gets a
//! node secret); a runner gets a session token when it is provisioned. The server keeps only a
//! SHA-256 hash of either and hands the secret out once, so a leaked database or listing never
//! lets anyone act for a spot or stop a runner. This module owns the rules: how a secret is
//! hashed, whether a call that names a spot (or a runner session) may act for it, and which
//! job settings are redacted for readers who are not agents. Making the random secret needs the
//! operating system, so the server does that; everything here is pure.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

/// Bytes of randomness in a spot secret or a runner token (256 bits).
pub const SECRET_BYTES: usize = 32;

/// What the server shows instead of a job's `env` value to anyone but an agent.
pub const REDACTED: &str = "***";

/// The text form of a freshly drawn secret: lowercase hex, so it travels in a header as is.
pub fn secret_text(random: &[u8; SECRET_BYTES]) -> String {
    hex(random)
}

/// The stored form of a secret: the hex SHA-256 of its text. The secret itself is never stored.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Whether `given` is the secret whose hash is `stored`, compared in constant time so the
/// answer's timing says nothing about how much of the hash matched.
pub fn matches(stored: &str, given: &str) -> bool {
    hash(given).as_bytes().ct_eq(stored.as_bytes()).into()
}

/// What the store knows of a spot's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpotCredential {
    /// No such spot: the call goes on, and the store answers it as it answers any unknown spot
    /// (there is nobody to impersonate).
    UnknownSpot,
    /// The spot registered without asking for a secret (a batch-contract client).
    NotIssued,
    /// The spot holds a secret; this is its hash.
    Issued { hash: String },
}

/// Why a call may not act for a spot (or a runner session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The call carries no secret, but the spot has one (or the server requires one).
    #[error("missing secret")]
    Missing,
    /// The call carries a secret that is not this spot's.
    #[error("wrong secret")]
    Wrong,
    /// The server requires a secret of every spot, and this one registered without one.
    #[error("no secret issued")]
    NotIssued,
}

/// May a call that carries `given` (the `X-Spot-Secret` header, if any) act for a spot whose
/// credential is `stored`? `required` is the server's `--require-node-credentials`.
///
/// A spot with a secret is acted for only with that secret. A spot without one keeps the batch
/// contract's behaviour (the agent key alone suffices) unless the server requires secrets. A
/// secret that is given must be right even where none is needed: a caller that sends one is
/// never a contract client, so a wrong one is another spot's, or a guess.
pub fn may_act_for_spot(
    stored: &SpotCredential,
    given: Option<&str>,
    required: bool,
) -> Result<(), Refusal> {
    match (stored, given) {
        (SpotCredential::UnknownSpot, _) => Ok(()),
        (SpotCredential::Issued { hash }, Some(given)) if matches(hash, given) => Ok(()),
        (SpotCredential::Issued { .. }, Some(_)) => Err(Refusal::Wrong),
        (SpotCredential::Issued { .. }, None) => Err(Refusal::Missing),
        (SpotCredential::NotIssued, Some(_)) => Err(Refusal::Wrong),
        (SpotCredential::NotIssued, None) if required => Err(Refusal::NotIssued),
        (SpotCredential::NotIssued, None) => Ok(()),
    }
}

/// Whether a hello gets a secret: when the spot asks for one, and always when the server
/// requires them (a contract client then ignores the field and is refused later, which is the
/// point of the setting).
pub fn issues_spot_secret(asked: bool, required: bool) -> bool {
    asked || required
}

/// May a call act for a runner session whose token hash is `stored` (`None` for a runner
/// recorded before tokens existed)? `token` is the `X-Runner-Token` header, `api_key_ok`
/// whether the call carries the configured API key, `api_key_configured` whether there is one.
///
/// With an API key configured, the key or the runner's own token is needed. Without one, the
/// session id is the session-runners contract's capability and suffices on its own, but a token
/// that is given must be the runner's.
pub fn may_act_for_runner(
    stored: Option<&str>,
    token: Option<&str>,
    api_key_configured: bool,
    api_key_ok: bool,
) -> Result<(), Refusal> {
    if api_key_ok {
        return Ok(());
    }
    match (stored, token) {
        (Some(hash), Some(token)) if matches(hash, token) => Ok(()),
        (_, Some(_)) => Err(Refusal::Wrong),
        (_, None) if api_key_configured => Err(Refusal::Missing),
        (_, None) => Ok(()),
    }
}

/// A job's `env` as a reader sees it: every value replaced by [`REDACTED`] unless the reader is
/// an agent (which needs the values to run the job's tasks). The names stay, so a user can see
/// which variables a job sets. Every value is treated as secret, because no rule on names can
/// tell a password from a seed.
pub fn env_for_reader(env: &BTreeMap<String, String>, agent: bool) -> BTreeMap<String, String> {
    if agent {
        return env.clone();
    }
    env.keys()
        .map(|name| (name.clone(), REDACTED.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn issued(secret: &str) -> SpotCredential {
        SpotCredential::Issued { hash: hash(secret) }
    }

    #[test]
    fn a_hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(secret_text(&[0xab; SECRET_BYTES]).len(), 64);
    }

    #[test]
    fn the_decision_table() {
        use Refusal::*;
        let s = "s3cret";
        for required in [false, true] {
            let act = |stored: &SpotCredential, given| may_act_for_spot(stored, given, required);
            assert_eq!(act(&issued(s), Some(s)), Ok(()));
            assert_eq!(act(&issued(s), Some("other")), Err(Wrong));
            assert_eq!(act(&issued(s), None), Err(Missing));
            assert_eq!(act(&SpotCredential::NotIssued, Some(s)), Err(Wrong));
            assert_eq!(act(&SpotCredential::UnknownSpot, None), Ok(()));
            assert_eq!(act(&SpotCredential::UnknownSpot, Some(s)), Ok(()));
        }
        assert_eq!(
            may_act_for_spot(&SpotCredential::NotIssued, None, false),
            Ok(())
        );
        assert_eq!(
            may_act_for_spot(&SpotCredential::NotIssued, None, true),
            Err(NotIssued)
        );
        assert!(issues_spot_secret(true, false));
        assert!(issues_spot_secret(false, true));
        assert!(!issues_spot_secret(false, false));
    }

    #[test]
    fn runner_tokens() {
        use Refusal::*;
        let h = hash("tok");
        // With an API key configured: the key or the token.
        assert_eq!(may_act_for_runner(Some(&h), None, true, true), Ok(()));
        assert_eq!(
            may_act_for_runner(Some(&h), Some("tok"), true, false),
            Ok(())
        );
        assert_eq!(
            may_act_for_runner(Some(&h), Some("nope"), true, false),
            Err(Wrong)
        );
        assert_eq!(
            may_act_for_runner(Some(&h), None, true, false),
            Err(Missing)
        );
        assert_eq!(
            may_act_for_runner(None, Some("tok"), true, false),
            Err(Wrong)
        );
        // Without one: the session id suffices; a given token must be right.
        assert_eq!(may_act_for_runner(Some(&h), None, false, false), Ok(()));
        assert_eq!(
            may_act_for_runner(Some(&h), Some("nope"), false, false),
            Err(Wrong)
        );
    }

    #[test]
    fn env_is_redacted_for_everyone_but_agents() {
        let env = BTreeMap::from([("PASSWORD".to_string(), "hunter2".to_string())]);
        assert_eq!(env_for_reader(&env, true), env);
        assert_eq!(env_for_reader(&env, false)["PASSWORD"], REDACTED);
    }

    proptest! {
        #[test]
        fn only_the_spots_own_secret_acts_for_a_spot_with_one(
            secret in "[0-9a-f]{1,64}",
            given in proptest::option::of("[0-9a-f]{1,64}"),
            required in any::<bool>(),
        ) {
            let allowed = may_act_for_spot(&issued(&secret), given.as_deref(), required).is_ok();
            prop_assert_eq!(allowed, given.as_deref() == Some(secret.as_str()));
        }

        #[test]
        fn a_spot_without_a_secret_is_open_only_to_callers_without_one(
            given in proptest::option::of("[0-9a-f]{1,64}"),
            required in any::<bool>(),
        ) {
            let allowed = may_act_for_spot(&SpotCredential::NotIssued, given.as_deref(), required).is_ok();
            prop_assert_eq!(allowed, given.is_none() && !required);
        }

        #[test]
        fn no_token_but_the_runners_own_replaces_the_api_key(
            token in "[0-9a-f]{1,64}",
            given in proptest::option::of("[0-9a-f]{1,64}"),
        ) {
            let h = hash(&token);
            let allowed = may_act_for_runner(Some(&h), given.as_deref(), true, false).is_ok();
            prop_assert_eq!(allowed, given.as_deref() == Some(token.as_str()));
        }
    }
}
