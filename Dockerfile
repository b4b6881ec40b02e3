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

# The project without its dev extras; /app keeps the scenario files readable by path.
RUN pip install . \
    && rm -rf build *.egg-info \
    && mkdir -p /var/lib/storepulse/recovery \
    && chown -R storepulse:storepulse /var/lib/storepulse

USER storepulse
EXPOSE 9464
ENTRYPOINT ["storepulse"]
CMD ["--help"]
