#!/usr/bin/env bash
# Publishes the built layer zips (scripts/build-layer.sh) with the AWS CLI and prints their ARNs.
#
#   scripts/publish-layer.sh [--dry-run] [--public] [--arch x86_64|arm64|all] REGION [REGION...]
#
# --dry-run prints the exact commands instead of running them. --public grants
# lambda:GetLayerVersion to every account. Credentials come from the AWS CLI's usual sources.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
public=0
arch=all
regions=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --public) public=1 ;;
    --arch) arch=${2:?--arch needs x86_64, arm64 or all}; shift ;;
    --arch=*) arch=${1#--arch=} ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    -*) echo "publish-layer: unknown option $1" >&2; exit 2 ;;
    *) regions+=("$1") ;;
  esac
  shift
done
[ ${#regions[@]} -gt 0 ] || { echo "usage: $0 [--dry-run] [--public] [--arch x86_64|arm64|all] REGION [REGION...]" >&2; exit 2; }
case "$arch" in
  x86_64) archs=(x86_64) ;;
  arm64) archs=(arm64) ;;
  all) archs=(x86_64 arm64) ;;
  *) echo "publish-layer: --arch must be x86_64, arm64 or all" >&2; exit 2 ;;
esac
for r in "${regions[@]}"; do
  [[ "$r" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || { echo "publish-layer: '$r' is not a region name" >&2; exit 2; }
done

runtimes="python3.10 python3.11 python3.12 python3.13 nodejs18.x nodejs20.x nodejs22.x java17 java21 dotnet8 ruby3.3 provided.al2 provided.al2023"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

run() {
  if [ "$dry" = 1 ]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

if [ "$dry" = 0 ]; then
  command -v aws >/dev/null || { echo "publish-layer: the AWS CLI (aws) is not installed" >&2; exit 1; }
fi

for a in "${archs[@]}"; do
  zip="target/layer/loupe-layer-$a.zip"
  if [ "$dry" = 0 ] && [ ! -f "$zip" ]; then
    echo "publish-layer: $zip not found: run scripts/build-layer.sh $a first" >&2
    exit 1
  fi
  for r in "${regions[@]}"; do
    name="loupe-$a"
    cmd=(aws lambda publish-layer-version --region "$r" --layer-name "$name"
      --description "loupe $version ($a)" --license-info Apache-2.0
      --zip-file "fileb://$zip" --compatible-architectures "$a"
      --compatible-runtimes $runtimes  # one word each, on purpose
      --query '[LayerVersionArn,Version]' --output text)
    if [ "$dry" = 1 ]; then
      run "${cmd[@]}"
      lv='<VERSION>'
      arn="arn:aws:lambda:$r:<ACCOUNT>:layer:$name:<VERSION>"
    else
      read -r arn lv < <("${cmd[@]}")
    fi
    if [ "$public" = 1 ]; then
      perm=(aws lambda add-layer-version-permission --region "$r" --layer-name "$name"
        --version-number "$lv" --statement-id public-get --action lambda:GetLayerVersion
        --principal '*' --output text)
      if [ "$dry" = 1 ]; then run "${perm[@]}"; else "${perm[@]}" >/dev/null; fi
    fi
    echo "$arn"
  done
done
