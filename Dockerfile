# syntax=docker/dockerfile:1
#
# kmailops operator image: one static binary (musl) on distroless/static, which brings CA
# certificates (for provider APIs and SMTP TLS) and a non-root user, and nothing else.
#
#   scripts/build-image.sh registry.example.com/team/kmailops:0.1.0    # build and push
#   docker build -t kmailops:dev .                                       # or by hand
#
# No image is published; deploy/ runs the one you push (docs/operations.md#install).

# ---- build ------------------------------------------------------------------------------
# rust on Alpine targets musl and links statically by default; the MSRV is in Cargo.toml.
FROM docker.io/library/rust:1.89-alpine AS build
# make: jemalloc (the allocator) is built from C sources.
RUN apk add --no-cache musl-dev gcc make
WORKDIR /src
# .dockerignore lets in only Cargo.toml, Cargo.lock, src/ and templates/.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kmailops \
 && install -D -m 0755 target/release/kmailops /out/usr/local/bin/kmailops \
 && mkdir -p templates /out/usr/share/kmailops \
 && cp -r templates /out/usr/share/kmailops/templates \
 && /out/usr/local/bin/kmailops --version

# ---- run --------------------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /
# The built-in email templates ({% include %} / {% extends %} targets) live here; the working
# directory makes a relative templates folder resolve to them.
WORKDIR /usr/share/kmailops
# distroless "nonroot": uid/gid 65532, matching the Deployment's securityContext.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kmailops"]
CMD ["run"]
