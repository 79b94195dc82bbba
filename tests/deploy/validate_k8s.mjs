// Renders every kustomize overlay of deploy/k8s with `kubectl kustomize`, validates every object
// against the Kubernetes JSON schemas bundled in the npm package kubernetes-models (offline), and
// checks that ports, labels and selectors agree across the Services, StatefulSet, Job,
// NetworkPolicies, PodMonitor, ConfigMap and the Prometheus scrape config. Also proves the
// validator rejects a broken manifest. Exit 0 when everything holds.
//
//   node validate_k8s.mjs ROOT   (run from a directory whose node_modules has kubernetes-models,
//                                 @kubernetes-models/prometheus-operator and js-yaml)
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import yaml from "js-yaml";

const root = process.argv[2];
const failures = [];
const check = (ok, message) => { if (!ok) failures.push(message); };

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const module = group === "monitoring.coreos.com"
      ? `@kubernetes-models/prometheus-operator/${group}/${version}`
      : group === "" ? `kubernetes-models/${version}` : `kubernetes-models/${group}/${version}`;
  const models = await import(module);
  if (!models[kind]) throw new Error(`no schema for ${apiVersion} ${kind}`);
  return models[kind];
}

async function validate(object) {
  const Model = await modelFor(object.apiVersion, object.kind);
  new Model(object).validate();  // throws with the failing path
}

const byKind = (objects, kind, name) =>
    objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
const matches = (selector, labels) =>
    Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);

function checkConsistency(overlay, objects) {
  const where = (s) => `${overlay}: ${s}`;
  const sts = byKind(objects, "StatefulSet", "ternps-server");
  const job = byKind(objects, "Job", "ternps-worker");
  const config = byKind(objects, "ConfigMap", "ternps-job");
  const serverSvc = byKind(objects, "Service", "ternps-server");
  const workerSvc = byKind(objects, "Service", "ternps-worker");
  for (const [what, o] of Object.entries({sts, job, config, serverSvc, workerSvc})) {
    check(o, where(`missing ${what}`));
  }
  if (failures.length) return;
  const serverPod = sts.spec.template;
  const workerPod = job.spec.template;
  const ports = (pod) => Object.fromEntries(
      pod.spec.containers[0].ports.map((p) => [p.name, p.containerPort]));
  const serverPorts = ports(serverPod);
  const workerPorts = ports(workerPod);
  // Selectors pick the right pods.
  check(matches(sts.spec.selector.matchLabels, serverPod.metadata.labels),
        where("StatefulSet selector does not match its pods"));
  check(sts.spec.serviceName === serverSvc.metadata.name,
        where("StatefulSet serviceName is not the headless Service"));
  check(serverSvc.spec.clusterIP === "None", where("ternps-server Service is not headless"));
  check(matches(serverSvc.spec.selector, serverPod.metadata.labels),
        where("ternps-server Service does not select the shard pods"));
  check(!matches(serverSvc.spec.selector, workerPod.metadata.labels),
        where("ternps-server Service also selects workers"));
  check(matches(workerSvc.spec.selector, workerPod.metadata.labels),
        where("ternps-worker Service does not select the worker pods"));
  for (const [svc, pods] of [[serverSvc, serverPorts], [workerSvc, workerPorts]]) {
    for (const p of svc.spec.ports) {
      check(pods[p.targetPort] === p.port,
            where(`Service ${svc.metadata.name} port ${p.name}: targetPort ${p.targetPort} ` +
                  `is not container port ${p.port}`));
    }
  }
  // Job settings agree with the replica counts and the shard names.
  const data = config.data;
  check(Number(data.SHARD_COUNT) === sts.spec.replicas,
        where(`SHARD_COUNT ${data.SHARD_COUNT} != StatefulSet replicas ${sts.spec.replicas}`));
  check(Number(data.WORLD_SIZE) === job.spec.completions &&
            job.spec.completions === job.spec.parallelism,
        where(`WORLD_SIZE ${data.WORLD_SIZE} != Job completions/parallelism`));
  check(job.spec.completionMode === "Indexed", where("worker Job is not Indexed"));
  const expected = Array.from({length: sts.spec.replicas},
      (_, i) => `${sts.metadata.name}-${i}.${serverSvc.metadata.name}:${serverPorts.grpc}`);
  check(data.SHARDS === expected.join(","), where(`SHARDS ${data.SHARDS} != ${expected}`));
  // The shard's --state_dir is a volume from the StatefulSet's claim template (kept across pod
  // restarts), mounted read-write.
  const server = serverPod.spec.containers[0];
  const stateArg = server.args.find((a) => a.startsWith("--state_dir="));
  check(stateArg, where("the shard has no --state_dir"));
  if (stateArg) {
    const mount = (server.volumeMounts || []).find(
        (m) => m.mountPath === stateArg.slice("--state_dir=".length));
    check(mount && !mount.readOnly, where(`${stateArg} is not a writable volume mount`));
    const claims = (sts.spec.volumeClaimTemplates || []).map((c) => c.metadata.name);
    check(mount && claims.includes(mount.name),
          where(`${stateArg} is not backed by a volumeClaimTemplate (${claims})`));
  }
  // Scrape annotations name the metrics ports.
  check(serverPod.metadata.annotations["prometheus.io/port"] === String(serverPorts.metrics),
        where("shard scrape annotation port != metrics port"));
  check(workerPod.metadata.annotations["prometheus.io/port"] === String(workerPorts.metrics),
        where("worker scrape annotation port != metrics port"));
  // Probes use the gRPC port (Kubernetes' gRPC probe on a plaintext shard; ternps-healthcheck
  // over the shard's own TLS otherwise: see securityProblems).
  for (const probe of ["readinessProbe", "livenessProbe"]) {
    const p = server[probe];
    check(p && (p.grpc ? p.grpc.port === serverPorts.grpc
                       : (p.exec.command.find((a) => a.startsWith("--address=")) || "")
                             .endsWith(`:${serverPorts.grpc}`)),
          where(`shard ${probe} is not on the gRPC port`));
  }
  for (const problem of securityProblems(sts, job)) failures.push(where(problem));
  // Network policies: workers reach shard gRPC, Prometheus reaches metrics, nothing else.
  for (const np of objects.filter((o) => o.kind === "NetworkPolicy")) {
    const target = matches(np.spec.podSelector.matchLabels, serverPod.metadata.labels) ? serverPod
        : matches(np.spec.podSelector.matchLabels, workerPod.metadata.labels) ? workerPod : null;
    check(target, where(`NetworkPolicy ${np.metadata.name} selects no ternps pods`));
    if (!target) continue;
    const targetPorts = ports(target);
    for (const rule of np.spec.ingress) {
      for (const p of rule.ports) {
        check(p.port in targetPorts, where(`NetworkPolicy ${np.metadata.name}: no port ${p.port}`));
        for (const from of rule.from) {
          const fromLabels = from.podSelector.matchLabels;
          if (p.port === "grpc") {
            check(matches(fromLabels, workerPod.metadata.labels) && !from.namespaceSelector,
                  where(`NetworkPolicy ${np.metadata.name}: gRPC open to more than workers`));
          } else {
            check(fromLabels["app.kubernetes.io/name"] === "prometheus",
                  where(`NetworkPolicy ${np.metadata.name}: metrics open to non-Prometheus`));
          }
        }
      }
    }
  }
  // PodMonitor (if present) selects ternps pods by a port they have.
  const pm = byKind(objects, "PodMonitor");
  if (pm) {
    check(matches(pm.spec.selector.matchLabels, serverPod.metadata.labels) &&
              matches(pm.spec.selector.matchLabels, workerPod.metadata.labels),
          where("PodMonitor does not select both shards and workers"));
    for (const e of pm.spec.podMetricsEndpoints) {
      check(e.port in serverPorts && e.port in workerPorts, where(`PodMonitor port ${e.port}`));
    }
  }
  // The DNS-discovery scrape config names these Services and metrics ports.
  const prom = yaml.load(readFileSync(`${root}/deploy/prometheus/prometheus-k8s.yml`, "utf8"));
  const ns = serverSvc.metadata.namespace;
  for (const [svc, port] of [[serverSvc, serverPorts.metrics], [workerSvc, workerPorts.metrics]]) {
    const name = `${svc.metadata.name}.${ns}.svc.cluster.local`;
    const sd = prom.scrape_configs.flatMap((c) => c.dns_sd_configs || [])
                   .find((d) => d.names.includes(name));
    check(sd && sd.port === port, where(`prometheus-k8s.yml: no DNS SD for ${name}:${port}`));
  }
}

// TLS and job tokens (components/security): when the shard serves TLS, its files and the
// workers' come from read-only Secret volumes, the workers trust it (and present certificates
// when it requires them, and a token file when it requires tokens), and the probes check it over
// the same TLS with ternps-healthcheck. Returns the problems found.
function securityProblems(sts, job) {
  const problems = [];
  const server = sts.spec.template.spec.containers[0];
  const worker = job.spec.template.spec.containers[0];
  const flag = (args, name) => {
    const a = (args || []).find((x) => x.startsWith(`--${name}=`));
    return a === undefined ? undefined : a.slice(name.length + 3);
  };
  const has = (args, name) => (args || []).includes(`--${name}`);
  // Every file flag must point into a read-only mount of a Secret volume.
  const fromSecret = (pod, container, file, what) => {
    const mount = (container.volumeMounts || []).find((m) => file.startsWith(`${m.mountPath}/`));
    const volume = mount && (pod.spec.volumes || []).find((v) => v.name === mount.name);
    if (!mount || !volume || !volume.secret) {
      problems.push(`${what} ${file} is not in a Secret volume`);
    } else if (!mount.readOnly) {
      problems.push(`${what} ${file}: the Secret is mounted writable`);
    }
  };
  const serverCert = flag(server.args, "tls_cert");
  if (serverCert === undefined) {
    if (flag(worker.args, "tls_ca")) problems.push("workers use TLS, the shard does not");
    return problems;
  }
  const serverFiles = {tls_cert: serverCert, tls_key: flag(server.args, "tls_key"),
                       tls_client_ca: flag(server.args, "tls_client_ca")};
  for (const [name, file] of Object.entries(serverFiles)) {
    if (file) fromSecret(sts.spec.template, server, file, `shard --${name}`);
  }
  if (!serverFiles.tls_key) problems.push("the shard has --tls_cert without --tls_key");
  const workerFiles = {tls_ca: flag(worker.args, "tls_ca"), tls_cert: flag(worker.args, "tls_cert"),
                       tls_key: flag(worker.args, "tls_key"),
                       token_file: flag(worker.args, "token_file")};
  for (const [name, file] of Object.entries(workerFiles)) {
    if (file) fromSecret(job.spec.template, worker, file, `worker --${name}`);
  }
  if (!workerFiles.tls_ca) problems.push("the shard serves TLS and workers have no --tls_ca");
  if (serverFiles.tls_client_ca && !(workerFiles.tls_cert && workerFiles.tls_key)) {
    problems.push("the shard requires client certificates and workers present none");
  }
  if (has(server.args, "require_job_token") && !workerFiles.token_file) {
    problems.push("the shard requires job tokens and workers have no --token_file");
  }
  for (const probe of ["readinessProbe", "livenessProbe"]) {
    const p = server[probe];
    if (!p || p.grpc || !p.exec) {
      problems.push(`shard ${probe}: Kubernetes' gRPC probe cannot check a TLS shard`);
      continue;
    }
    const command = p.exec.command;
    if (!command[0].endsWith("/ternps-healthcheck")) {
      problems.push(`shard ${probe} does not run ternps-healthcheck`);
    }
    for (const [name, file] of [["tls_ca", serverFiles.tls_client_ca],
                                ["tls_cert", serverFiles.tls_cert],
                                ["tls_key", serverFiles.tls_key]]) {
      if (file && flag(command, name) !== file) {
        problems.push(`shard ${probe}: --${name} is not ${file}`);
      }
    }
    if (!flag(command, "tls_server_name")) {
      problems.push(`shard ${probe}: no --tls_server_name (it dials 127.0.0.1)`);
    }
  }
  return problems;
}

const overlays = ["base", "overlays/cpu-demo", "overlays/gpu", "overlays/secure"];
let validated = 0;
for (const overlay of overlays) {
  const rendered = execFileSync("kubectl", ["kustomize", `${root}/deploy/k8s/${overlay}`],
                                {encoding: "utf8"});
  const objects = yaml.loadAll(rendered).filter(Boolean);
  check(objects.length >= 9, `${overlay}: only ${objects.length} objects rendered`);
  for (const o of objects) {
    try {
      await validate(o);
      ++validated;
    } catch (e) {
      failures.push(`${overlay}: ${o.kind}/${o.metadata?.name}: ${e.message}`);
    }
  }
  checkConsistency(overlay, objects);
}

// The validator can fail: a broken StatefulSet (container port as a string) and an unknown kind.
const broken = yaml.loadAll(execFileSync("kubectl",
    ["kustomize", `${root}/deploy/k8s/base`], {encoding: "utf8"}))
    .find((o) => o.kind === "StatefulSet");
broken.spec.template.spec.containers[0].ports[0].containerPort = "7070";
let rejected = false;
try { await validate(broken); } catch { rejected = true; }
check(rejected, "the validator accepted a StatefulSet with a string containerPort");
// The security checks can fail: the secure overlay with the token Secret mounted writable, and
// with the shard's probe back on Kubernetes' plaintext gRPC probe.
{
  const secure = yaml.loadAll(execFileSync("kubectl",
      ["kustomize", `${root}/deploy/k8s/overlays/secure`], {encoding: "utf8"}));
  const sts = byKind(secure, "StatefulSet", "ternps-server");
  const job = byKind(secure, "Job", "ternps-worker");
  check(securityProblems(sts, job).length === 0, "the secure overlay has security problems");
  job.spec.template.spec.containers[0].volumeMounts.find((m) => m.name === "token").readOnly =
      false;
  check(securityProblems(sts, job).some((p) => p.includes("mounted writable")),
        "a writable token Secret mount went unnoticed");
  sts.spec.template.spec.containers[0].readinessProbe = {grpc: {port: 7070}};
  check(securityProblems(sts, job).some((p) => p.includes("cannot check a TLS shard")),
        "a plaintext probe of a TLS shard went unnoticed");
}
let unknown = false;
try { await validate({apiVersion: "apps/v1", kind: "NoSuchKind"}); } catch { unknown = true; }
check(unknown, "the validator accepted an unknown kind");

if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`k8s manifests: ${validated} objects valid across ${overlays.length} renders, ` +
            "consistent; broken manifests rejected");
