# Multi-arch builds of Ralex's images:  docker buildx bake --push   (or --load for one platform)
variable "TAG" { default = "0.1.0" }
variable "REGISTRY" { default = "ralex" }
variable "PYTHON_IMAGE" { default = "python:3.11-slim-bookworm" }
variable "NODE_IMAGE" { default = "node:22-bookworm-slim" }

group "default" { targets = ["litellm", "budget-exporter", "opencode"] }

target "_multiarch" { platforms = ["linux/amd64", "linux/arm64"] }

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

target "opencode" {
  inherits   = ["_multiarch"]
  context    = "."
  dockerfile = "services/opencode/Dockerfile"
  args       = { NODE_IMAGE = NODE_IMAGE }
  tags       = ["${REGISTRY}/opencode:${TAG}"]
}
