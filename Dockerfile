# tund in a container: a static tund on a small Debian that also holds what a
# first look needs (curl, nc, ip, ss, tcpdump, and socat for a stand-in
# server).
#
#   docker build -t tund .
#   docker run --rm --name tund --cap-add NET_ADMIN --device /dev/net/tun tund
#   docker exec tund curl -sS http://198.18.0.2/
#
# tund needs CAP_NET_ADMIN and /dev/net/tun only to create its device; the
# container's own network namespace holds the device, so the host's network
# is not touched. docker stop sends SIGTERM: tund drains (--drain, 5 s by
# default, inside docker's 10 s grace) and exits 0. README's "Containers"
# section has the rest; scripts/docker-images makes the two base images
# locally where no registry can be reached.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY third_party ./third_party
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/tund ./cmd/tund

FROM debian:bookworm-slim
RUN apt-get update \
	&& apt-get install -y --no-install-recommends curl netcat-openbsd iproute2 tcpdump socat ca-certificates \
	&& rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tund /usr/local/bin/tund
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tund"]
