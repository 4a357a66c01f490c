# capsign's container image: a stripped release build on Debian, run from distroless (glibc and
# CA certificates, no shell), as a non-root user. Health checks use `capsign probe /healthz`,
# which follows PORT. Base images are named in full (podman and buildah have no default
# registry); pin them by digest for reproducible builds (`@sha256:…`, from
# `skopeo inspect docker://IMAGE`). The build context is only what is copied (.dockerignore).
#   docker build -t capsign .
#   docker run -p 8080:8080 -e ABLY_API_KEY=... -e CAPSIGN_COOKIE_KEY=... \
#     -e CAPSIGN_SESSION_SECRET=... -e CAPSIGN_RULES=/etc/capsign/rules.toml \
#     -v "$PWD/examples:/etc/capsign:ro" capsign
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY crates crates
COPY examples examples
COPY benches benches
COPY README.md README.md
# Symbols stripped: a smaller image, and nothing in it a debugger needs in production.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --bin capsign

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/capsign /capsign
USER nonroot:nonroot
# PORT, not CAPSIGN_LISTEN: container platforms (Cloud Run, Knative) set their own PORT.
ENV PORT=8080 CAPSIGN_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["/capsign", "probe", "/healthz"]
ENTRYPOINT ["/capsign"]
CMD ["serve"]
