# syntax=docker/dockerfile:1
# events-worker image: the wheel and its pinned dependencies in a venv, run as a
# non-root user. Build: docker build -t events-worker .
# Dependencies come from PyPI wheels only; nothing downloads a binary at run time.

# The Rust toolchain of the build stage only (the core, worker._core, is compiled
# into the wheel; the runtime image carries no compiler).
FROM rust:1.95-slim-bookworm AS rust

# --- builder: build the wheel, install it with the constraints into /opt/venv ---
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CARGO_HOME=/usr/local/cargo \
    RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:$PATH

COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
# rustc links with the system C toolchain.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --upgrade pip==26.3

WORKDIR /src

# Dependencies first, in their own layer: only pyproject/constraints changes rebuild it.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt \
 && /opt/venv/bin/python -m pip install -c constraints.txt -r /tmp/requirements.txt

# Then the package itself, as a wheel (maturin compiles core/), without touching
# the dependencies.
COPY . .
RUN /opt/venv/bin/python -m pip wheel --no-deps -w /wheels . \
 && /opt/venv/bin/python -m pip install --no-deps /wheels/events_worker-*.whl \
 && /opt/venv/bin/python -m pip check

# --- final: slim runtime, venv only, non-root ---
FROM python:3.11-slim-bookworm

# A container's probes and scrapes arrive on its own IP: listen beyond loopback.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EW_HTTP_HOST=0.0.0.0

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
 && install -d -o app -g app /data

COPY --from=builder /opt/venv /opt/venv

USER app
WORKDIR /home/app
# chdb:///data/... is the writable place for an embedded ClickHouse.
VOLUME ["/data"]

ENTRYPOINT ["events-worker"]
CMD ["--help"]
