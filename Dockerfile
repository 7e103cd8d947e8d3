# syntax=docker/dockerfile:1
# Multi-stage: build a venv with Interlock, then copy it into a slim non-root runtime image.  The
# tiktoken encodings ship inside the package (no download at run time); `encodings install` verifies them.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/interlock
ENV PATH=/opt/interlock/bin:$PATH
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir . \
 && interlock encodings install

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 interlock
COPY --from=build /opt/interlock /opt/interlock
WORKDIR /app
COPY --chown=interlock:interlock migrations ./migrations
COPY --chown=interlock:interlock alembic.ini ./
COPY --chown=interlock:interlock rules ./rules
ENV PATH=/opt/interlock/bin:$PATH \
    INTERLOCK_HOST=0.0.0.0 \
    INTERLOCK_DATABASE_URL=sqlite+aiosqlite:////data/interlock.db \
    INTERLOCK_SPOOL_DIR=/data/spool \
    INTERLOCK_RULES_DIR=/app/rules
RUN mkdir -p /data && chown interlock:interlock /data
USER interlock
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz'); sys.exit(0)"
CMD ["sh", "-c", "interlock db upgrade && exec interlock serve"]
