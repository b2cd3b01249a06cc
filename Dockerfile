# Easel: a small image that runs `python -m bot` as a non-root user.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/easel
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
RUN /opt/easel/bin/pip install .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/easel/bin:$PATH \
    PORT=3000 DATABASE_URL=sqlite:////data/easel.db
RUN useradd --system --uid 10001 --home-dir /data --create-home easel
COPY --from=build /opt/easel /opt/easel
USER easel
WORKDIR /data
VOLUME /data
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"
# SIGTERM lets running jobs finish (SHUTDOWN_GRACE_SECONDS) before exiting.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
