// deploy/: the DaemonSet and RBAC agree with what the agent does: every kind it watches is
// readable, the seed's ConfigMap is loaded (optional), the host mounts it needs are there, the
// health probes hit the port the agent serves, and the command's flags exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { parseAllDocuments } from 'yaml';
import { packageRoot } from '../../src/paths.js';
import { AGENT_KINDS } from '../../src/agent/datastore/types.js';
import { KUBERNETES_RESOURCES } from '../../src/agent/datastore/kubernetes.js';
import { FIELDS } from '../../src/agent/config-fields.js';

type Obj = { kind: string; metadata: { name: string }; [k: string]: unknown };
const docs = parseAllDocuments(readFileSync(path.join(packageRoot, 'deploy', 'sluice.yaml'), 'utf8')).map(
  (d) => d.toJSON() as Obj,
);
const byKind = (k: string) => docs.find((d) => d.kind === k)!;

test('the ClusterRole lets the agent list and watch every kind it watches', () => {
  const rules = (
    byKind('ClusterRole') as unknown as { rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] }
  ).rules;
  for (const kind of AGENT_KINDS) {
    const r = KUBERNETES_RESOURCES[kind];
    const rule = rules.find((x) => x.apiGroups.includes(r.group) && x.resources.includes(r.plural));
    assert.ok(rule, `${kind} (${r.plural}.${r.group || 'core'}) is readable`);
    for (const v of ['list', 'watch']) assert.ok(rule.verbs.includes(v), `${kind}: ${v}`);
  }
  // Read-only: the agent writes nothing to the API.
  for (const r of rules)
    assert.deepEqual(
      r.verbs.filter((v) => !['get', 'list', 'watch'].includes(v)),
      [],
    );
});

test('the DaemonSet: host network, privileged, the optional kubernetes-services-endpoint ConfigMap, bpffs and cgroup mounts', () => {
  const ds = byKind('DaemonSet') as unknown as {
    spec: {
      template: {
        spec: {
          hostNetwork: boolean;
          serviceAccountName: string;
          containers: {
            command: string[];
            envFrom: { configMapRef: { name: string; optional: boolean } }[];
            securityContext: { privileged: boolean };
            volumeMounts: { name: string; mountPath: string }[];
            livenessProbe: { httpGet: { port: number; path: string } };
            readinessProbe: { httpGet: { port: number; path: string } };
          }[];
          volumes: { name: string; hostPath: { path: string } }[];
        };
      };
    };
  };
  const pod = ds.spec.template.spec;
  const c = pod.containers[0]!;
  assert.equal(pod.hostNetwork, true);
  assert.equal(pod.serviceAccountName, byKind('ServiceAccount').metadata.name);
  assert.equal(c.securityContext.privileged, true);
  assert.deepEqual(c.envFrom, [{ configMapRef: { name: 'kubernetes-services-endpoint', optional: true } }]);
  const hostPathOf = (mount: string) => {
    const m = c.volumeMounts.find((v) => v.mountPath === mount);
    return m && pod.volumes.find((v) => v.name === m.name)?.hostPath.path;
  };
  assert.equal(hostPathOf('/sys/fs/bpf'), '/sys/fs/bpf');
  const cgroupArg = c.command[c.command.indexOf('--cgroup') + 1]!;
  const mount = c.volumeMounts.find((v) => cgroupArg.startsWith(v.mountPath + '/'));
  assert.ok(mount, 'the --cgroup directory is inside a mounted cgroup tree');
  assert.notEqual(cgroupArg, mount.mountPath, 'a sub-cgroup, never the root');
  const healthPort = FIELDS.healthPort.default;
  assert.deepEqual([c.livenessProbe.httpGet.port, c.livenessProbe.httpGet.path], [healthPort, '/liveness']);
  assert.deepEqual([c.readinessProbe.httpGet.port, c.readinessProbe.httpGet.path], [healthPort, '/readiness']);
  assert.notEqual(healthPort, FIELDS.bpfKubeProxyHealthzPort.default, "never kube-proxy's health port");
  // Every flag of the command is one `sluice agent` knows.
  const help = execFileSync(process.execPath, [path.join(packageRoot, 'bin', 'sluice.js'), 'agent', '--help'], {
    encoding: 'utf8',
  });
  for (const flag of c.command.filter((a) => a.startsWith('--')))
    assert.ok(help.includes(flag), `sluice agent ${flag}`);
});
