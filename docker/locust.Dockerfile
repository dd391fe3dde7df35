# Locust with kvclient, for compose's load profile (KvClientUser drives kvclient and exports its
# metrics); the stock image lacks the client. The build context is ./client:
#   docker build -f docker/locust.Dockerfile -t kvkit-locust:0.1.0 client
# The locustfile itself stays a bind mount (./loadtests), as with the stock image.

# The same pinned tag the compose file ran before this image existed.
ARG LOCUST_IMAGE=locustio/locust:2.31.8
FROM ${LOCUST_IMAGE}

ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# The image's virtualenv belongs to root: install as root, then run as the image's user again
# (named, as the base image defines it; it has no fixed numeric id to refer to).
# hadolint ignore=DL3066
USER root
COPY pyproject.toml README.md /tmp/kvclient/
COPY src /tmp/kvclient/src
RUN pip install --no-cache-dir /tmp/kvclient \
    && rm -rf /tmp/kvclient \
    && python -c "import kvclient, prometheus_client"
# hadolint ignore=DL3066
USER locust
