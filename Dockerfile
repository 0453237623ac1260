# Loyalty Relay worker image (used by deploy/compose and deploy/k8s).
#   docker build -t loyalty-relay .
# The source tree stays at /app (editable install), so topics/ (catalog, routes, schemas) sits
# where app/config.py expects it; mount another routes file with ROUTES_FILE if needed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY topics ./topics
RUN pip install -e . \
    && useradd --uid 10001 --no-create-home --home-dir /app relay \
    && mkdir -p /data && chown relay /data

USER 10001
# Production defaults: listen on every interface, RocksDB tables on the /data volume.
ENV WEB_HOST=0.0.0.0 WEB_PORT=6066 STORE=rocksdb:// DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=2)" || exit 1
ENTRYPOINT ["relay"]
CMD ["worker"]
