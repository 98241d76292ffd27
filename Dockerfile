# The lab's image where a registry is reachable (docker-compose build). Without one, lab vm's
# guest imports a skeleton image and bind-mounts the host's tools instead (docs/vm.md).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 ethtool \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /work
COPY pyproject.toml README.md ./
COPY lab ./lab
COPY scenarios ./scenarios
RUN pip install --no-cache-dir .
