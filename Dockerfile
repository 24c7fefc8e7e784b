# EDDL image: leader, worker and gateway daemons, the `eddl` command, and the MCU host simulator.
# Multi-stage; every step is the same on amd64 and arm64 (no architecture-specific step):
#   docker buildx build --platform linux/amd64,linux/arm64 -t eddl .
# See docs/compose.md.

# ---- 1: the firmware host simulator (C, built with the Makefile the package ships) ----
FROM python:3.11-slim AS firmware
# Unpinned: Debian's security updates to the slim base move these versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY firmware/ firmware/
RUN make -C firmware host \
    && install -m 0755 firmware/build/host/eddl-mcu-sim /usr/local/bin/eddl-mcu-sim

# ---- 2: the Python wheels (EDDL and its dependencies) ----
FROM python:3.11-slim AS wheels
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY eddl/ eddl/
COPY leader/ leader/
COPY worker/ worker/
COPY profiler/ profiler/
COPY firmware/ firmware/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- 3: the runtime image ----
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1
COPY --from=wheels /wheels /wheels
# Pinned by the wheel folder: --no-index installs only the wheels built above.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links /wheels eddl \
    && rm -rf /wheels
COPY --from=firmware /usr/local/bin/eddl-mcu-sim /usr/local/bin/eddl-mcu-sim
# A numeric uid, so that volume ownership and Kubernetes' runAsNonRoot work without /etc/passwd.
RUN groupadd --system --gid 10001 eddl \
    && useradd --system --uid 10001 --gid eddl --home-dir /var/lib/eddl --create-home eddl
USER 10001:10001
WORKDIR /var/lib/eddl
# The mount points of compose.yaml's named volumes, made here by the eddl user: Docker fills a
# new named volume from the image's folder, owner included, so the daemons can write to it.
RUN mkdir -p leader leader-1 leader-2 leader-3 tokens node
# gRPC (leader), Prometheus metrics (leader, workers).
EXPOSE 50051 9464
CMD ["eddl", "--help"]
