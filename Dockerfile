# syntax=docker/dockerfile:1
# kube-changejob operator image.
#   docker build -t kube-changejob:dev .
# The builder stage makes a wheel of the project and installs it with its dependencies into a
# virtual environment; the final stage copies only that environment onto the same Python base, so it
# carries no compiler, no pip and no source tree. It runs as uid/gid 65532 and writes nothing
# outside /tmp, so it works with readOnlyRootFilesystem (the chart mounts an emptyDir on /tmp).
#
# PYTHON_IMAGE is the base of both stages: the official python:3.12-slim (3.12.14, Debian trixie),
# pinned by the digest of its multi-platform index so a rebuild of the same commit starts from the
# same bytes; refresh it with `skopeo inspect --format '{{.Digest}}' docker://python:3.12-slim`.
# Any image with python3 and its venv module works: tools/image.sh builds this file with buildah on
# a Debian base it makes with debootstrap, without a daemon or a registry (docs/development.md).
ARG PYTHON_IMAGE=python:3.12-slim@sha256:78387bc3881b8273120a12ebe6c1ab22b018ccc2c9adf565ae1ac9b536e184ea

FROM ${PYTHON_IMAGE} AS builder
# Unset by default, so pip uses its index. An offline build passes a directory of wheels mounted
# into the build (PIP_NO_INDEX=1, PIP_FIND_LINKS=<dir>), as tools/image.sh does; a mirror is
# PIP_INDEX_URL.
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY LICENSE requirements.lock ./
COPY operator/ operator/
# The venv's own pip (from ensurepip) builds the project's wheel and installs the locked, hashed
# dependencies, then the wheel itself without resolving anything; pip and setuptools leave the venv after.
RUN python3 -m venv /opt/kube-changejob \
 && /opt/kube-changejob/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/kube-changejob/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock \
 && /opt/kube-changejob/bin/pip install --no-deps --no-index /wheels/*.whl && /opt/kube-changejob/bin/pip check \
 && /opt/kube-changejob/bin/pip uninstall --yes pip setuptools \
 && /opt/kube-changejob/bin/python -m compileall -q /opt/kube-changejob/lib \
 && /opt/kube-changejob/bin/python -c "import changejob.cli"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kube-changejob" \
      org.opencontainers.image.description="Kubernetes operator that runs a Job when watched resources change" \
      org.opencontainers.image.source="https://github.com/nusnewob/kube-changejob" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's own pip is a build tool too; the operator does not need it at run time (a base
# without pip has none to remove).
RUN if python3 -m pip --version >/dev/null 2>&1; then python3 -m pip uninstall --yes pip; fi \
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
