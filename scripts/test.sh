#!/usr/bin/env bash
# Runs every test of the repository. On a fresh machine (as root) it first installs what the
# tests need. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# --- tools the tests use ------------------------------------------------------------------
need_pkgs=()
command -v tshark >/dev/null || need_pkgs+=(tshark)
# The namespace tests (cplb-netns, root only): iproute2 builds the hosts, nft observes the
# rules cplbd programs, keepalived is the interoperation peer.
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v keepalived >/dev/null || need_pkgs+=(keepalived)
# `cplb lab bench` compares cplbd's proxy with HAProxy (Debian's package).
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need_pkgs+=(haproxy)
# The IPVS tests boot a guest with Debian's cloud kernel (this kernel has no IPVS): qemu,
# a static busybox, cpio and depmod build it; ipvsadm observes IPVS in it.
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
[[ -x /bin/busybox ]] || need_pkgs+=(busybox-static)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v depmod >/dev/null || [[ -x /usr/sbin/depmod ]] || need_pkgs+=(kmod)
command -v ipvsadm >/dev/null || [[ -x /usr/sbin/ipvsadm ]] || need_pkgs+=(ipvsadm)
# The hardening tests: systemd-analyze checks the shipped unit, setpriv starts cplbd
# unprivileged with ambient capabilities.
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
# The reports' page is rendered by headless Chromium to a PNG that is checked.
command -v chromium >/dev/null || need_pkgs+=(chromium)
if ((${#need_pkgs[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        log "installing ${need_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # keepalived's and haproxy's packages must not start system-wide daemons: the tests
        # run their own.
        made_policy=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
            made_policy=1
        fi
        apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
        if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    else
        echo "not root: cannot install ${need_pkgs[*]}; tests that need them will say they skipped" >&2
    fi
fi
# As root every tool is there now, so tests that need one must not skip.
if [[ $(id -u) -eq 0 ]]; then export CPLB_REQUIRE_TOOLS=1; fi

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

# --- checks -------------------------------------------------------------------------------
log "format"
cargo fmt --all --check

log "sans-IO rule for cplb-core"
bash scripts/check-sans-io.sh

log "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
# Tests that need root are #[ignore]d (a plain `cargo test` lists them as ignored); as root
# they run too.
if [[ $(id -u) -eq 0 ]]; then
    # One root test is left out by name: the keepalived cell with v3_checksum_as_v2 needs
    # keepalived 2.2.8 or later, and the one Debian bookworm installs above is 2.2.7, where it
    # fails by design. Where keepalived is 2.2.8 or later, run it by hand (as root):
    #   cargo test -p cplb-netns --test keepalived -- --ignored --exact \
    #       interoperates_with_keepalived_over_vrrp3_ipv4_with_v3_checksum_as_v2
    cargo test --workspace --locked -- --include-ignored --exact \
        --skip interoperates_with_keepalived_over_vrrp3_ipv4_with_v3_checksum_as_v2
else
    cargo test --workspace --locked
fi
