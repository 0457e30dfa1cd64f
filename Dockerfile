# ai-poster: one image for the daemon (scheduler + admin API). State lives in the /data volume.
# Every step here is plain pip/useradd, so it behaves the same as a clean virtualenv install.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIPOSTER_CONFIG=/etc/aiposter/config.toml \
    AIPOSTER_DAEMON_DATA_DIR=/data \
    AIPOSTER_DB_URL=sqlite:////data/aiposter.db \
    AIPOSTER_PUBLISHERS_OUTBOX_DIRECTORY=/data/outbox \
    AIPOSTER_QUICKSTART_INBOX=/data/inbox \
    AIPOSTER_API_HOST=0.0.0.0 \
    AIPOSTER_LOG_FORMAT=json

RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin aiposter \
    && mkdir -p /data /etc/aiposter && chown aiposter:aiposter /data

WORKDIR /src
COPY pyproject.toml README.md ./
COPY aiposter ./aiposter
COPY migrations ./migrations
RUN pip install . && rm -rf /src
COPY config.example.toml /etc/aiposter/config.toml

WORKDIR /data
VOLUME ["/data"]
USER aiposter
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["aiposter", "run"]
