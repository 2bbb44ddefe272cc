# drover as a container image: its static binary and nothing else, FROM scratch.
#
# No base image is pulled: the binary is built beforehand, statically linked, and the build
# context is a directory holding only what the image needs. scripts/image does both steps:
#
#     scripts/image                      # builds drover:latest
#
# or by hand, with a context directory CTX holding `drover` (the static binary),
# `ca-certificates.crt` (for TLS to PostgreSQL or other servers; may be empty) and an empty
# directory `data`:
#
#     RUSTFLAGS="-C target-feature=+crt-static" \
#         cargo build --release --locked --target x86_64-unknown-linux-gnu -p drover
#     docker build -f Dockerfile -t drover CTX
#
# Run it with its keys (it listens on every address inside the container, which drover refuses
# without them) and a volume for its SQLite store:
#
#     docker run -p 8080:8080 -v drover-data:/var/lib/drover \
#         -e DROVER_AGENT_KEY=... -e DROVER_API_KEY=... drover
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# The state directory, owned by the user drover runs as, so a new volume mounted here is too.
COPY --chown=65532:65532 data /var/lib/drover
COPY drover /drover
USER 65532:65532
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
VOLUME /var/lib/drover
EXPOSE 8080
ENTRYPOINT ["/drover"]
CMD ["server", "--bind", "0.0.0.0", "--port", "8080", "--db", "/var/lib/drover/drover.db"]
