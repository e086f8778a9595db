# sshgate gateway image. Config, policies and the host key come from outside (mounts or a
# Kubernetes ConfigMap/Secret), so one image serves every deployment; see docs/operations.md.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# tini is PID 1 so SIGTERM reaches the gateway (graceful drain) and zombies are reaped.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sshgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sshgate --shell /usr/sbin/nologin sshgate \
    && install -d -o 10001 -g 10001 /var/lib/sshgate /etc/sshgate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels

ENV SSHGATE_CONFIG=/etc/sshgate/config.yaml \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/sshgate
VOLUME ["/var/lib/sshgate"]
# 2222: SSH (listen.port); 9090: /metrics, /healthz, /readyz (metrics.listen must use port 9090).
EXPOSE 2222 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sshgate", "serve"]
