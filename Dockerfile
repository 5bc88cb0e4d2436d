# syntax=docker/dockerfile:1
# podid-nmi image: `docker build -t podid-nmi:0.1.0 .`

FROM node:24-bookworm-slim AS build
WORKDIR /app
# Dependencies first, so that source edits reuse the npm ci layer.
COPY package.json package-lock.json ./
# npm's download cache outlives the layer, so a lockfile change refetches only what changed.
RUN --mount=type=cache,target=/root/.npm npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
# Then what nothing loads at run time (docs/image.md: half of node_modules): types,
# TypeScript sources (Node never strips types under node_modules), source maps, markdown, and
# packages' own test, example, benchmark and docs folders.
RUN npm run build \
 && npm prune --omit=dev \
 && chmod +x dist/cli.js \
 && find node_modules -type f \( -name '*.ts' -o -name '*.mts' -o -name '*.cts' -o -name '*.map' -o -name '*.md' -o -name '*.markdown' \) -delete \
 && find node_modules -regextype posix-extended -type d \
      -regex '.*/node_modules/(@[^/]+/)?[^/]+/(test|tests|__tests__|example|examples|benchmark|benchmarks|docs|\.github)' \
      -prune -exec rm -rf {} +

# The runtime is Debian's slim image plus the build stage's node binary: node's image adds
# npm, npx, corepack, yarn and headers (about 25 MB) that the daemon never runs, and files
# removed in a later layer would still be pulled.
FROM debian:bookworm-slim
# iptables brings both iptables-nft and iptables-legacy (the daemon picks the node's flavour
# at start, as kube-proxy's images do); conntrack deletes stale entries to the metadata address;
# iproute2's `ss` names client sockets' cgroups (hostNetwork callers, /host/token); procps'
# `sysctl` sets route_localnet. test/image.test.ts checks the image holds every program the
# daemon runs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables conntrack iproute2 procps \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
# glibc malloc, tuned for one JS thread (docs/performance.md, Memory): one arena, since glibc would give
# node's helper threads arenas of their own, each keeping freed blocks; and 64 KiB blocks (a
# socket read's buffer) mapped and unmapped whole, so that short-lived read buffers do not
# leave the heap fragmented under load.
ENV NODE_ENV=production MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=65536
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# `kubectl exec … -- nmi cleanup-iptables` and friends.
RUN ln -s /app/dist/cli.js /usr/local/bin/nmi
# Root: iptables, iptables-restore and conntrack must run as uid 0
# in the node's network namespace with CAP_NET_ADMIN/CAP_NET_RAW; a non-root process would only
# get those through file capabilities, which need allowPrivilegeEscalation. The DaemonSet runs it
# privileged (the node's cgroup namespace and a writable /proc/sys) with a read-only root
# filesystem; the unprivileged profile (README, Deployment) keeps only NET_ADMIN and NET_RAW.
USER 0
# Not shipped: daemonset/examples, which only `nmi demo` reads (a local demo, not for nodes).
# Runtime flags, measured in docs/performance.md (Memory) with bench/deployed.bench.ts, which starts the
# daemon from this line: --expose-gc lets the daemon run one memory-reducing GC after a list
# burst (first sync, relist); --max-semi-space-size=2 keeps V8's young generation at 2 MiB
# semi-spaces instead of growing to 16 MiB under load.
ENTRYPOINT ["node", "--expose-gc", "--max-semi-space-size=2", "/app/dist/cli.js"]
