# Two images from one build: the gateway (the default, last stage) and, with `--target emulator`,
# the AWS emulator the compose playground runs. Config, policies and the host key come from outside
# (mounts or a Kubernetes ConfigMap/Secret), so one gateway image serves every deployment; see
# docs/operations.md.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY emulator ./emulator
# Wheels of both distributions and all their dependencies; each image installs only its own.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . ./emulator

FROM python:3.11-slim AS runtime
# tini is PID 1 so SIGTERM reaches the process (graceful drain) and zombies are reaped.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sshgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sshgate --shell /usr/sbin/nologin sshgate \
    && install -d -o 10001 -g 10001 /var/lib/sshgate /etc/sshgate
ENV PYTHONUNBUFFERED=1
WORKDIR /var/lib/sshgate
ENTRYPOINT ["/usr/bin/tini", "--"]

# `docker build --target emulator`: sshgate-aws-emulator (EC2, ECS, SSM and its data channel, STS,
# S3, EC2 Instance Connect). Its SSM agent runs shells in this container, as the sshgate user.
FROM runtime AS emulator
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels sshgate-aws-emulator
USER 10001:10001
EXPOSE 4566
CMD ["sshgate-aws-emulator", "--host", "0.0.0.0", "--port", "4566"]

FROM runtime AS gateway
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels sshgate
ENV SSHGATE_CONFIG=/etc/sshgate/config.yaml
USER 10001:10001
VOLUME ["/var/lib/sshgate"]
# 2222: SSH (listen.port); 9090: /metrics, /healthz, /readyz (metrics.listen must use port 9090).
EXPOSE 2222 9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
CMD ["sshgate", "serve"]
