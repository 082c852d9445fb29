// Certificates and kubeconfigs of the lab's control plane, made with openssl (RSA 2048, one CA
// for everything, as docs/kubernetes-lab-notes.md describes):
//
//   pki/ca.crt, ca.key                 CN=sluice-lab-ca, CA:TRUE
//   pki/apiserver.crt, .key            serverAuth; SANs: the kubernetes.default names, localhost,
//                                      127.0.0.1, the first address of the service range
//                                      (10.96.0.1) and the control plane's underlay IP
//   pki/admin.crt, .key                O=system:masters, CN=sluice-lab-admin (kubectl, the agents,
//                                      the lab's kubelet)
//   pki/controller-manager.crt, .key   CN=system:kube-controller-manager (the user the bootstrap
//                                      RBAC binding names)
//   pki/sa.key, sa.pub                 the service-account signing key pair
//
// Kubeconfigs: admin.kubeconfig (server https://<control plane IP>:6443, the lab's KUBECONFIG)
// and controller-manager.kubeconfig (https://127.0.0.1:6443: it runs beside the API server).
// Everything is reused when `up` runs again with the same addresses (pki/params.json says which).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { run } from '../exec.js';

export interface PkiParams {
  /** The API server's address on the lab underlay (the control-plane host). */
  controlPlaneIp: string;
  /** The first address of the service range: the `kubernetes` Service's ClusterIP. */
  serviceIp: string;
}

export interface Pki {
  dir: string;
  ca: string;
  caKey: string;
  apiserverCert: string;
  apiserverKey: string;
  adminCert: string;
  adminKey: string;
  cmCert: string;
  cmKey: string;
  saKey: string;
  saPub: string;
}

export function pkiFiles(dir: string): Pki {
  const f = (n: string): string => path.join(dir, n);
  return {
    dir,
    ca: f('ca.crt'),
    caKey: f('ca.key'),
    apiserverCert: f('apiserver.crt'),
    apiserverKey: f('apiserver.key'),
    adminCert: f('admin.crt'),
    adminKey: f('admin.key'),
    cmCert: f('controller-manager.crt'),
    cmKey: f('controller-manager.key'),
    saKey: f('sa.key'),
    saPub: f('sa.pub'),
  };
}

async function openssl(args: string[], what: string): Promise<void> {
  const r = await run('openssl', args, { timeoutMs: 60_000 });
  if (r.code !== 0) {
    const why = r.code === 127 ? 'openssl is not installed (scripts/setup.sh installs it)' : r.stderr.trim();
    throw new Error(`openssl (${what}): ${why}`);
  }
}

/** A leaf certificate signed by the CA: key, CSR, then x509 -req with an extension file. */
async function leaf(
  p: Pki,
  base: string,
  subject: string,
  extensions: string[],
  days: number,
): Promise<{ crt: string; key: string }> {
  const key = path.join(p.dir, `${base}.key`);
  const csr = path.join(p.dir, `${base}.csr`);
  const crt = path.join(p.dir, `${base}.crt`);
  const ext = path.join(p.dir, `${base}.ext`);
  fs.writeFileSync(
    ext,
    ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', ...extensions].join('\n') +
      '\n',
    { mode: 0o600 },
  );
  await openssl(
    ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', subject],
    `${base} key`,
  );
  // A random serial per certificate (-CAcreateserial would race between parallel signings).
  const serial = `0x${crypto.randomBytes(16).toString('hex')}`;
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      p.ca,
      '-CAkey',
      p.caKey,
      '-set_serial',
      serial,
      '-days',
      String(days),
      '-out',
      crt,
      '-extfile',
      ext,
    ],
    `${base} certificate`,
  );
  fs.rmSync(csr, { force: true });
  fs.rmSync(ext, { force: true });
  fs.chmodSync(key, 0o600);
  return { crt, key };
}

function complete(p: Pki): boolean {
  return [p.ca, p.caKey, p.apiserverCert, p.apiserverKey, p.adminCert, p.adminKey, p.cmCert, p.cmKey, p.saKey, p.saPub]
    .map((f) => fs.existsSync(f))
    .every(Boolean);
}

/**
 * The lab's certificates in `dir`: made now (about a second, keys in parallel), or reused when a
 * complete set for the same addresses is there.
 */
export async function ensurePki(dir: string, params: PkiParams): Promise<Pki> {
  const p = pkiFiles(dir);
  const paramsFile = path.join(dir, 'params.json');
  const want = JSON.stringify(params);
  try {
    if (fs.readFileSync(paramsFile, 'utf8') === want && complete(p)) return p;
  } catch {
    // none yet
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const sa = (async () => {
    await openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', p.saKey], 'sa key');
    await openssl(['pkey', '-in', p.saKey, '-pubout', '-out', p.saPub], 'sa public key');
    fs.chmodSync(p.saKey, 0o600);
  })();
  await openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      p.caKey,
      '-out',
      p.ca,
      '-days',
      '3650',
      '-subj',
      '/CN=sluice-lab-ca',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    'CA',
  );
  fs.chmodSync(p.caKey, 0o600);
  const sans = [
    'DNS:kubernetes',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc',
    'DNS:kubernetes.default.svc.cluster.local',
    'DNS:localhost',
    'IP:127.0.0.1',
    `IP:${params.serviceIp}`,
    `IP:${params.controlPlaneIp}`,
  ];
  await Promise.all([
    sa,
    leaf(
      p,
      'apiserver',
      '/CN=kube-apiserver',
      ['extendedKeyUsage=serverAuth', `subjectAltName=${sans.join(',')}`],
      365,
    ),
    leaf(p, 'admin', '/O=system:masters/CN=sluice-lab-admin', ['extendedKeyUsage=clientAuth'], 365),
    leaf(p, 'controller-manager', '/CN=system:kube-controller-manager', ['extendedKeyUsage=clientAuth'], 365),
  ]);
  fs.writeFileSync(paramsFile, want, { mode: 0o600 });
  return p;
}

/** Writes a kubeconfig with one cluster, one user (client certificate) and one context. */
export function writeKubeconfig(
  file: string,
  opts: { server: string; ca: string; cert: string; key: string; user: string },
): void {
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'sluice-lab', cluster: { server: opts.server, 'certificate-authority': opts.ca } }],
    users: [{ name: opts.user, user: { 'client-certificate': opts.cert, 'client-key': opts.key } }],
    contexts: [{ name: 'sluice-lab', context: { cluster: 'sluice-lab', user: opts.user } }],
    'current-context': 'sluice-lab',
    preferences: {},
  };
  fs.writeFileSync(`${file}.tmp`, stringify(doc), { mode: 0o600 });
  fs.renameSync(`${file}.tmp`, file);
}
