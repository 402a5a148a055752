#!/usr/bin/env bash
# A container app: jobs that run inside a podman image, in serial and in mpi mode.
#
#   bash docs/examples/container_app.sh [WORKDIR]
#
# Needs podman, runc and busybox-static (Debian: apt-get install podman runc busybox-static),
# balsam on PATH and, for the MPI job, an mpiexec (pip install mpich). Everything it makes,
# podman's image store included, lives under WORKDIR (a new temporary directory by default);
# nothing is pulled from a registry.
set -euo pipefail

WORK=${1:-$(mktemp -d /tmp/balsam-container.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
IMAGE=localhost/balsam-demo:1

# 1. podman's settings: its own storage under WORKDIR, and what this kind of VM needs
#    (no CAP_SYS_RESOURCE for the default ulimits, cgroupfs, runc rather than crun).
cat > "$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
cat > "$WORK/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$WORK/podman/root"
runroot = "$WORK/podman/run"
CONF
export CONTAINERS_CONF=$WORK/containers.conf CONTAINERS_STORAGE_CONF=$WORK/storage.conf

# 2. An image without a registry: a busybox root filesystem with a file only it has.
ROOTFS=$WORK/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/tmp"
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for tool in $("$ROOTFS/bin/busybox" --list); do
    [ "$tool" = busybox ] || ln -sf busybox "$ROOTFS/bin/$tool"
done
echo "inside balsam-demo" > "$ROOTFS/etc/balsam-demo"
tar -C "$ROOTFS" -cf "$WORK/image.tar" .
podman import --quiet "$WORK/image.tar" "$IMAGE" > /dev/null

# 3. A workflow database whose launchers run container apps with podman. --pull=never: an
#    image that is not here fails its job at once ("image not known") instead of being
#    looked for on a registry.
balsam init "$WORK/wf" > /dev/null
export BALSAM_DB_PATH=$WORK/wf
sed -i -e 's/^  container_runtime: .*/  container_runtime: podman/' \
       -e 's/^  container_args: .*/  container_args: ["--pull=never"]/' "$WORK/wf/settings.yml"

# 4. The app: a command that only works inside the image (it reads /etc/balsam-demo) and
#    writes into the job's working directory, which is bound into the container. The job's
#    args are words, never shell code: "$0" is the first of them, inside the container.
balsam app --name Greeter --container "$IMAGE" \
    --executable "sh -c 'cat /etc/balsam-demo > greeting.txt; echo \"\$GREETING, \$0\" >> greeting.txt'"
balsam job --name hello --workflow demo --application Greeter --args 'world;echo INJECTED' \
    --env GREETING=hello --yes > /dev/null
balsam launcher --consume-all --wf-filter demo --job-mode serial

# 5. The same app in mpi mode: mpiexec -n 2 ... podman run ... IMAGE cmd, one container per
#    rank (each knows its rank: podman passes PMI_RANK through).
balsam app --name RankReport --container "$IMAGE" \
    --executable "sh -c 'cat /etc/balsam-demo > rank-\$PMI_RANK.txt'"
balsam job --name ranks --workflow demo-mpi --application RankReport --ranks-per-node 2 \
    --yes > /dev/null
balsam launcher --consume-all --wf-filter demo-mpi --job-mode mpi

balsam ls apps
balsam ls --wf demo
balsam ls --wf demo-mpi
echo "greeting: $(cat "$WORK"/wf/data/demo/hello_*/greeting.txt | tr '\n' '|')"
echo "ranks: $(cd "$WORK"/wf/data/demo-mpi/ranks_* && ls rank-*.txt | tr '\n' ' ')"
