# Multi-arch builds of Ralex's four images (linux/amd64 + linux/arm64 under one tag each):
#   docker buildx bake --push                          # to $REGISTRY (e.g. REGISTRY=ghcr.io/you TAG=0.1.0)
#   docker buildx bake --set '*.platform=linux/arm64' --load    # one platform into the local engine
# Each pushed tag is a manifest list with SLSA provenance and an SBOM attached. compose.yaml needs
# none of this: without a registry it builds the same Dockerfiles for the machine it runs on.
# .github/workflows/release.yml runs this on every v* tag.
variable "TAG" { default = "0.1.0" }
variable "REGISTRY" { default = "ralex.invalid" }  # local builds: the names compose.yaml uses; release.yml sets ghcr.io/OWNER
variable "PYTHON_IMAGE" { default = "python:3.11-slim-bookworm" }
variable "NODE_IMAGE" { default = "node:22-bookworm-slim" }
variable "OPENCODE_VERSION" { default = "" }  # empty: services/opencode/opencode.lock's default per platform

group "default" { targets = ["litellm", "budget-exporter", "egress", "opencode"] }

target "_multiarch" {
  platforms   = ["linux/amd64", "linux/arm64"]
  attest      = ["type=provenance,mode=max", "type=sbom"]
  labels      = {
    "org.opencontainers.image.version" = TAG
    "org.opencontainers.image.licenses" = "MIT"
  }
}

target "litellm" {
  inherits   = ["_multiarch"]
  context    = "."
  dockerfile = "services/litellm/Dockerfile"
  args       = { PYTHON_IMAGE = PYTHON_IMAGE }
  tags       = ["${REGISTRY}/litellm:${TAG}"]
}

target "budget-exporter" {
  inherits   = ["_multiarch"]
  context    = "."
  dockerfile = "services/budget-exporter/Dockerfile"
  args       = { PYTHON_IMAGE = PYTHON_IMAGE }
  tags       = ["${REGISTRY}/budget-exporter:${TAG}"]
}

target "egress" {
  inherits   = ["_multiarch"]
  context    = "."
  dockerfile = "services/egress/Dockerfile"
  args       = { PYTHON_IMAGE = PYTHON_IMAGE }
  tags       = ["${REGISTRY}/egress:${TAG}"]
}

target "opencode" {
  inherits   = ["_multiarch"]
  context    = "."
  dockerfile = "services/opencode/Dockerfile"
  args       = { NODE_IMAGE = NODE_IMAGE, AGENT_BASE_IMAGE = NODE_IMAGE, OPENCODE_VERSION = OPENCODE_VERSION }
  tags       = ["${REGISTRY}/opencode:${TAG}"]
}
