# The MLflow tracking server and model registry of covidct (the same mlflow pin as
# tests/requirements.txt). Build context: the repository root.
#   docker build -f docker/mlflow.Dockerfile -t covidct-mlflow:dev .
# Every `mlflow server` option is read from its MLFLOW_* variable (mlflow 3.17); the defaults
# below keep the backend store (SQLite) and the artifacts under /mlflow, a volume in the stack.
FROM python:3.11-slim-bookworm
COPY deploy/mlflow/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
    && useradd --system --uid 10002 --user-group --home-dir /mlflow --create-home \
        --shell /usr/sbin/nologin mlflow
ENV MLFLOW_BACKEND_STORE_URI=sqlite:////mlflow/mlflow.db \
    MLFLOW_ARTIFACTS_DESTINATION=/mlflow/artifacts \
    MLFLOW_SERVE_ARTIFACTS=true \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000 \
    MLFLOW_WORKERS=2 \
    MLFLOW_SERVER_ALLOWED_HOSTS=mlflow,mlflow:5000,localhost,localhost:5000 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    PYTHONUNBUFFERED=1
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="covidct-mlflow" \
      org.opencontainers.image.description="MLflow tracking server and model registry for covidct" \
      org.opencontainers.image.revision="$VCS_REF"
USER mlflow
WORKDIR /mlflow
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:5000/health', timeout=4)"]
CMD ["mlflow", "server"]
