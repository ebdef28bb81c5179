# syntax=docker/dockerfile:1
# kube-changejob operator image.
#   docker build -t kube-changejob:dev .
# The builder stage makes a wheel of the project and installs it with its dependencies into a
# virtual environment; the final stage copies only that environment onto the same slim Python base,
# so it carries no compiler, no pip and no source tree. It runs as uid/gid 65532 and writes nothing
# outside /tmp, so it works with readOnlyRootFilesystem (the chart mounts an emptyDir on /tmp).

ARG PYTHON_IMAGE=python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY LICENSE requirements.lock ./
COPY operator/ operator/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/kube-changejob \
 && /opt/kube-changejob/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock \
 && /opt/kube-changejob/bin/pip install --no-deps --no-index /wheels/*.whl && /opt/kube-changejob/bin/pip check \
 && /opt/kube-changejob/bin/pip uninstall --yes pip \
 && /opt/kube-changejob/bin/python -m compileall -q /opt/kube-changejob/lib \
 && /opt/kube-changejob/bin/python -c "import changejob.cli"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kube-changejob" \
      org.opencontainers.image.description="Kubernetes operator that runs a Job when watched resources change" \
      org.opencontainers.image.source="https://github.com/nusnewob/kube-changejob" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's own pip is a build tool too; the operator does not need it at run time.
RUN python -m pip uninstall --yes pip \
 && rm -rf /root/.cache
COPY --from=builder /opt/kube-changejob /opt/kube-changejob
COPY LICENSE /licenses/LICENSE
ENV PATH=/opt/kube-changejob/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081 9443
ENTRYPOINT ["kube-changejob", "run"]
