#!/usr/bin/env bash
# The .NET runtime identifier of this machine: where the native `capsule` binary is published
# (artifacts/publish/Capsule/<config>_<rid>/capsule).
case "$(uname -m)" in
  x86_64) echo linux-x64 ;;
  aarch64) echo linux-arm64 ;;
  *) echo "capsule: no native build for $(uname -m)" >&2; exit 1 ;;
esac
