# The signaling server image: `docker build -t signaling .`
# Configuration comes from SIGNALING_* environment variables (see docker-compose.yml) or from
# options appended to `docker run IMAGE ...` (they replace CMD and go to `signaling serve`).
FROM python:3.11-slim

# No .pyc writes at run time, logs straight to `docker logs`.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md setup.py ./
COPY protocols ./protocols
COPY signaling ./signaling
COPY loadtest ./loadtest
# The C fast path of the SIP parser is built (and required) here; the compiler is removed in the
# same layer, so the image carries only the built extension.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && SIGNALING_REQUIRE_SPEEDUPS=1 pip install . \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* /app/build

# An unprivileged user; the records spool and the subscriber file (HA1 hashes, written by
# `signaling subscribers add` and the admin API) live in a volume it owns.
RUN useradd --system --home-dir /var/lib/signaling --create-home signaling
USER signaling
ENV SIGNALING_SPOOL=/var/lib/signaling/records.spool
ENV SIGNALING_SUBSCRIBERS=/var/lib/signaling/subscribers.jsonl
VOLUME ["/var/lib/signaling"]

# SIP over UDP (RFC 3261), SIP over WebSocket (RFC 7118), admin API + /metrics, Diameter.
EXPOSE 5060/udp 5060/tcp 5066/tcp 8081/tcp 3868/tcp

# Liveness through the admin API (python: the slim image has no curl).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/health', timeout=2)"]

ENTRYPOINT ["signaling", "serve"]
CMD ["--log-level", "info"]
