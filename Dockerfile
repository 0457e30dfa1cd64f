# ai-poster: one image for every role: `aiposter run` (default: scheduler, workers and API), `aiposter worker`
# (no API), `aiposter api` (no scheduler). State lives in the /data volume, the configuration in
# /etc/aiposter/config.toml. compose.yaml runs an API, a worker and PostgreSQL from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIPOSTER_CONFIG=/etc/aiposter/config.toml

RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin aiposter \
    && mkdir -p /data /etc/aiposter && chown aiposter:aiposter /data && chmod 0700 /data

WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY aiposter ./aiposter
COPY migrations ./migrations
# Every dependency at the version pinned in requirements.lock (the pins the test suite runs on).
RUN pip install -c requirements.lock . && rm -rf /src

# The image's configuration is the documented example with its paths in /data, the API listening on every
# interface (so that a published port reaches it) and JSON logs. Mount your own file over it; settings
# belong in that file (an environment variable overrides a key, and `aiposter config check` says which).
COPY config.example.toml /etc/aiposter/config.toml
RUN sed -i \
      -e 's|^url = "sqlite:///./data/aiposter.db"$|url = "sqlite:////data/aiposter.db"|' \
      -e 's|^data_dir = "./data"$|data_dir = "/data"|' \
      -e 's|^directory = "./data/outbox"$|directory = "/data/outbox"|' \
      -e 's|^inbox = "./data/inbox"$|inbox = "/data/inbox"|' \
      -e 's|^host = "127.0.0.1"$|host = "0.0.0.0"|' \
      -e 's|^format = "text"$|format = "json"|' \
      /etc/aiposter/config.toml

WORKDIR /data
VOLUME ["/data"]
USER aiposter
EXPOSE 8080
# For every role: the scheduler's heartbeat (run, worker) and GET /healthz (run, api); see aiposter/health.py.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["aiposter", "health"]
STOPSIGNAL SIGTERM
CMD ["aiposter", "run"]
