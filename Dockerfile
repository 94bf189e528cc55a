# pidelta worker image: one container per shard (PIDELTA_SHARD_INDEX / PIDELTA_SHARD_COUNT).
#   docker build -t pidelta .
#   docker run --rm -e PIDELTA_PI_URL=https://pi.example/piwebapi -v pidelta-data:/data pidelta

# Builder: turns the source tree into wheels (pidelta and its dependencies), so the
# final image carries no build tools and no source.
FROM python:3.11-slim AS builder
# gcc builds the C reader of PI bodies (workers/timeseries/_pijson.c) into the pidelta wheel,
# and with libkrb5-dev python-gssapi (PIDELTA_PI_AUTH=kerberos; no Linux wheel exists); the
# final image gets the wheels, not the compiler. Debian's current versions: the slim base
# image is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libkrb5-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY service ./service
COPY workers ./workers
COPY shard_config ./shard_config
COPY mock_pi ./mock_pi
# The C reader is optional to pip; here its absence fails the build (no cp311 wheel).
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[kerberos]' \
    && ls /wheels/pidelta-*-cp311-abi3-linux_*.whl /wheels/gssapi-*.whl

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIDELTA_TARGET=/data/lakehouse \
    PIDELTA_METRICS_PORT=9464 \
    PIDELTA_LOG_FORMAT=json
# The MIT Kerberos client libraries python-gssapi loads (no tools, no krb5.conf: the
# deployment mounts its own, see deploy/k8s-kerberos).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgssapi-krb5-2 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 pidelta \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin pidelta \
    && mkdir -p /data/lakehouse \
    && chown -R 10001:10001 /data
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/pidelta-*.whl \
       /wheels/gssapi-*.whl \
    && rm -rf /wheels
COPY deploy/docker/healthcheck.py /usr/local/lib/pidelta-healthcheck.py
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/pidelta-healthcheck.py"]
ENTRYPOINT ["pidelta"]
CMD ["run"]
