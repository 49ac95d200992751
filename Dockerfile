# The latcomp serving image: `latcomp serve` without torch (numpy, Pillow, onnxruntime, grpcio), the
# default bundle baked in as the model repository /models/faces64, running as an unprivileged user.
#
#   docker build -t latcomp-serve:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 latcomp-serve:0.1.0
#   docker run --rm -p 50051:50051 -v "$PWD/models:/models:ro" latcomp-serve:0.1.0   # your bundles
#
# GPU image (docs/DEPLOY.md): a CUDA base that has Python and TensorRT, and the `gpu` extra:
#   docker build --build-arg BASE=nvcr.io/nvidia/tensorrt:25.01-py3 --build-arg RUNTIME_EXTRA=gpu \
#       -t latcomp-serve:0.1.0-gpu .
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG RUNTIME_EXTRA=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # CUDA bases mark their Python as externally managed; this image is that Python's only user
    PIP_BREAK_SYSTEM_PACKAGES=1

WORKDIR /tmp/latcomp-src
COPY pyproject.toml README.md MANIFEST.in ./
COPY protos ./protos
COPY latcomp ./latcomp
# The serving extra only: torch, onnx and the training tools stay out of the image. (DL3013 asks to pin
# what pip installs; the one package named here is this source tree, pinned by the build context.)
# hadolint ignore=DL3013
RUN python3 -m pip install ".[${RUNTIME_EXTRA}]" \
    && mkdir /models \
    && ln -s "$(python3 -c 'import latcomp, pathlib; print(pathlib.Path(latcomp.__file__).parent / "default_bundle")')" \
        /models/faces64 \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp latcomp \
    && rm -rf /tmp/latcomp-src

WORKDIR /
USER 10001:10001
ENV HOME=/tmp \
    LATCOMP_CACHE_DIR=/tmp/latcomp \
    LATCOMP_HOST=[::] \
    LATCOMP_PORT=50051
EXPOSE 50051 9090
ENTRYPOINT ["latcomp"]
CMD ["serve", "--model-repository", "/models"]
