#!/bin/sh
# Builds local/busybox:1, the image of example/pools/docker-gvisor.nomad.hcl,
# from the busybox-static package, without a registry:
#   apt-get install busybox-static docker.io && sh example/local-image.sh
set -eu
tag=${1:-local/busybox:1}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/usr/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
ln -s /bin/setsid "$root/usr/bin/setsid"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/bin:/bin' - "$tag"
