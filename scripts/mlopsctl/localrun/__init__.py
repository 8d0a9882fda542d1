"""The local run: an environment of the platform started on this machine from its rendered
manifests, as a cluster would run it.

Not a container runtime and not Kubernetes: a test and demo harness that takes every field of a
workload that changes how its software behaves (command, args, env, volumes, user, probes,
resources, network identity and policy) and honours it with Linux's own parts (network
namespaces, nftables, cgroups, mount namespaces), or refuses the manifest, naming the field.

Layers, each in its own module:

- pure: `model` (what a workload asks for), `workloads` (rendered YAML -> model, with errors
  naming resource and field), `dockerfile` (what an image installs and starts),
  `network_policy` (NetworkPolicies -> allowed flows -> nftables rules),
  `prometheus_config` (ServiceMonitors and PrometheusRules -> Prometheus' files);
- side effects: `images` (image directories with their virtualenvs, cached), `cgroups`,
  `network` (namespaces, addresses, Service VIPs, policy enforcement), `launcher` (runs inside
  the new process: mounts, user, exec), `kubelet` (pods: containers, probes, restarts),
  `postgres` (CloudNativePG's `Cluster` as a real PostgreSQL), `prometheus` (Debian's server),
  `githost` (the git host the Applications name), `sync` (Argo CD's waves and hooks), `run`
  (all of it, with a status report).
"""
