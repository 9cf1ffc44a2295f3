// A real keeld for the browser tests: its own temporary state directory,
// a loopback port chosen by the kernel, HTTPS with its self-signed
// certificate, the built UI, and the admin password from the environment.
//
// Paths come from the environment when `cargo xtask ui test` runs us
// (KEELD, KEEL_VMM, KEEL_PAYLOAD_ECHO, KEEL_PAYLOAD_BUTTON); standalone,
// they are built with cargo (`cargo build -p keeld -p keel-vmm`, `cargo
// xtask payload echo button`).

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const UI_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ROOT = path.resolve(UI_DIR, '..');
export const ADMIN_PASSWORD = 'ui-test-admin-pw';

export function targetDir() {
  const t = process.env.CARGO_TARGET_DIR;
  if (t) return path.isAbsolute(t) ? t : path.join(ROOT, t);
  return path.join(ROOT, 'target');
}

export const SCREENSHOTS = path.join(targetDir(), 'ui-screenshots');

function cargo(args) {
  return execFileSync(process.env.CARGO || 'cargo', args, {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

/** keeld and keel-vmm (built when the environment does not name them). */
export function binaries() {
  if (process.env.KEELD && process.env.KEEL_VMM) return { keeld: process.env.KEELD, keelVmm: process.env.KEEL_VMM };
  cargo(['build', '--quiet', '-p', 'keeld', '-p', 'keel-vmm']);
  const debug = path.join(targetDir(), 'debug');
  return { keeld: path.join(debug, 'keeld'), keelVmm: path.join(debug, 'keel-vmm') };
}

/** The echo and button payload ELFs. */
export function payloads() {
  let echo = process.env.KEEL_PAYLOAD_ECHO;
  let button = process.env.KEEL_PAYLOAD_BUTTON;
  if (!echo || !button) {
    // `cargo xtask payload` prints "NAME PATH" per variant.
    for (const line of cargo(['xtask', 'payload', 'echo', 'button']).split('\n')) {
      const [name, ...rest] = line.trim().split(' ');
      if (name === 'echo') echo = rest.join(' ');
      if (name === 'button') button = rest.join(' ');
    }
  }
  for (const [what, p] of [
    ['echo', echo],
    ['button', button],
  ]) {
    if (!p || !fs.existsSync(p)) throw new Error(`The ${what} payload is missing (${p ?? 'not built'})`);
  }
  return { echo, button };
}

/** Why payload guests cannot run here, or null when /dev/kvm opens. */
export function kvmProblem() {
  try {
    fs.closeSync(fs.openSync('/dev/kvm', 'r+'));
    return null;
  } catch (e) {
    return `/dev/kvm cannot be opened: ${e.message}`;
  }
}

/** For a test that needs /dev/kvm: true to go on; false after printing
 * SKIPPED; throws when KEEL_REQUIRE_KVM=1. */
export function needKvm(t) {
  const why = kvmProblem();
  if (!why) return true;
  if (process.env.KEEL_REQUIRE_KVM === '1') throw new Error(`KEEL_REQUIRE_KVM=1 and this test cannot run: ${why}`);
  process.stderr.write(`SKIPPED (${why})\n`);
  t.skip(why);
  return false;
}

export class Keeld {
  /** Starts keeld on a fresh state directory serving `uiDir`. Its
   * switches and port groups stay in its inventory (`--no-host-network`:
   * no bridges, NAT or DHCP on the machine running the tests) unless
   * KEEL_UI_HOST_NETWORK=1. */
  static async start(uiDir = path.join(UI_DIR, 'dist')) {
    const { keeld, keelVmm } = binaries();
    const state = fs.mkdtempSync(path.join(os.tmpdir(), 'keel-ui-e2e-'));
    const args = ['--state-dir', state, '--listen', '127.0.0.1:0', '--keel-vmm', keelVmm, '--ui-dir', uiDir];
    if (process.env.KEEL_UI_HOST_NETWORK !== '1') args.push('--no-host-network');
    const child = spawn(
      keeld,
      args,
      { env: { ...process.env, KEEL_ADMIN_PASSWORD: ADMIN_PASSWORD }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const k = new Keeld(child, state);
    await k.waitListening(60_000);
    return k;
  }

  constructor(child, state) {
    this.child = child;
    this.state = state;
    this.url = '';
    this.log = [];
    let partial = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop();
      for (const line of lines) {
        this.log.push(line);
        const m = /^keeld: listening on (\S+)/.exec(line);
        if (m) this.url = m[1];
      }
    });
  }

  waitListening(ms) {
    return new Promise((resolve, reject) => {
      const end = Date.now() + ms;
      const check = () => {
        if (this.url) return resolve();
        if (this.child.exitCode !== null || Date.now() > end)
          return reject(new Error(`keeld did not start:\n${this.log.join('\n')}`));
        setTimeout(check, 50);
      };
      check();
    });
  }

  /** One API call as `user` (HTTP Basic); resolves to the parsed answer. */
  api(method, apiPath, body, user = 'admin', password = ADMIN_PASSWORD) {
    const url = new URL(`/api/v1${apiPath}`, this.url);
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = https.request(
        url,
        {
          method,
          rejectUnauthorized: false,
          headers: {
            Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`,
            ...(data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {}),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (text += c));
          res.on('end', () => {
            if (res.statusCode >= 400) return reject(new Error(`${method} ${apiPath}: ${res.statusCode} ${text}`));
            resolve(text ? JSON.parse(text) : undefined);
          });
        },
      );
      req.on('error', reject);
      if (data) req.write(data);
      req.end();
    });
  }

  /** Waits for a task to end; fails unless it succeeded. */
  async taskOk(task) {
    const t = await this.api('GET', `/tasks/${task.id}?wait_ms=30000`);
    if (t.state !== 'success') throw new Error(`task ${t.kind} ended ${t.state}: ${JSON.stringify(t.error)}`);
    return t;
  }

  /** Stops keeld, kills the VMMs it started (their command lines name
   * our state directory) and removes the state. */
  async stop() {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (this.child.exitCode === null) this.child.kill('SIGKILL');
    }
    for (const pid of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
      try {
        const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        if (cmd.includes(this.state)) process.kill(Number(pid), 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    fs.rmSync(this.state, { recursive: true, force: true });
  }
}
