# Multi-stage build of the geodispatch service.
# Build:  docker build -t geodispatch .
# Run:    docker compose up   (Redis 7 with AOF + the service, see docker-compose.yml)

FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY lua ./lua
COPY seed-data ./seed-data
COPY tests ./tests
COPY tools ./tools
COPY testkit ./testkit
RUN cargo build --release --locked -p geodispatch --bin geodispatch

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 geodispatch
COPY --from=build /src/target/release/geodispatch /usr/local/bin/geodispatch
COPY seed-data /app/seed-data
WORKDIR /app
USER geodispatch
ENV GEODISPATCH_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=2s --retries=5 CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["geodispatch"]
CMD ["serve", "--seed", "/app/seed-data"]
