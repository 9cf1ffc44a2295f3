// Browser tests of the web Host Client: headless Chromium (Debian's
// /usr/bin/chromium, no browser download) driven by playwright-core,
// against a real keeld with payload guests on the native /dev/kvm. Each
// test saves a screenshot into target/ui-screenshots/.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import { ADMIN_PASSWORD, Keeld, needKvm, payloads, SCREENSHOTS, UI_DIR } from './keeld.mjs';

const CHROMIUM = process.env.KEEL_CHROMIUM || '/usr/bin/chromium';
const WAIT = 30_000;

let keeld;
let browser;
let kernels;

before(async () => {
  if (!fs.existsSync(path.join(UI_DIR, 'dist', 'index.html')))
    throw new Error('ui/dist is not built: run `npm run build` (or `cargo xtask ui build`) first');
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
  fs.rmSync(SCREENSHOTS, { recursive: true, force: true });
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  kernels = payloads();
  keeld = await Keeld.start();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
});

// A page still open after a test means the test failed before its end:
// keep what it showed, and say where it was.
let openPages = [];
let failures = 0;
afterEach(async () => {
  for (const page of openPages) {
    const name = `FAILED-${++failures}`;
    try {
      await shot(page, name);
      const notices = await page.locator('.notice').allInnerTexts();
      process.stderr.write(`${name}.png: ${page.url()}${notices.length ? `; notices: ${notices.join(' | ')}` : ''}\n`);
    } catch (e) {
      process.stderr.write(`${name}: no screenshot (${e.message})\n`);
    }
    await page.context().close();
  }
  openPages = [];
});

after(async () => {
  await browser?.close();
  await keeld?.stop();
});

/** A new page at 1280×800 (or `viewport`), not yet logged in. */
async function newPage(viewport = { width: 1280, height: 800 }, colorScheme = 'light') {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport, colorScheme, reducedMotion: 'reduce' });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.jsErrors = errors;
  openPages.push(page);
  return page;
}

async function login(page, user = 'admin', password = ADMIN_PASSWORD) {
  await page.goto(keeld.url);
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('navigation', { name: 'Navigator' }).waitFor();
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: false });
}

async function closePage(page) {
  assert.deepEqual(page.jsErrors, [], 'no uncaught errors in the page');
  openPages = openPages.filter((p) => p !== page);
  await page.context().close();
}

function vmRow(page, name) {
  return page.locator(`tr[data-vm="${name}"]`);
}

async function openVms(page) {
  await page.getByRole('navigation', { name: 'Navigator' }).getByRole('link', { name: /^Virtual Machines/ }).click();
  await page.getByRole('heading', { name: 'Virtual Machines' }).waitFor();
}

/** Selects `name` in the list and clicks a power button of the toolbar. */
async function powerFromList(page, name, op) {
  const box = page.getByLabel(`Select ${name}`);
  if (!(await box.isChecked())) await box.check();
  await page.getByRole('toolbar', { name: 'Virtual machine actions' }).locator(`[data-op="${op}"]`).click();
}

async function waitState(page, name, state, timeout = WAIT) {
  await vmRow(page, name).locator(`[data-state="${state}"]`).waitFor({ timeout });
}

/** Creates a VM through the API (no browser), powered off. */
async function apiCreate(name, kernel) {
  const task = await keeld.api('POST', '/vms', {
    name,
    vcpus: 1,
    memory_mib: 32,
    boot: { kernel, cmdline: '' },
    guest_os: 'other',
  });
  await keeld.taskOk(task);
}

describe('web Host Client', () => {
  test('a wrong password shows the API error on the login page', async () => {
    const page = await newPage();
    await page.goto(keeld.url);
    await page.getByRole('heading', { name: 'Keel Host Client' }).waitFor();
    await page.getByLabel('User name').fill('admin');
    await page.getByLabel('Password').fill('not-the-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    const error = page.getByTestId('login-error');
    await assertText(error, /.+/);
    const text = await error.innerText();
    assert.ok(text.length > 5, `an error message: ${text}`);
    assert.equal(await page.getByRole('navigation', { name: 'Navigator' }).count(), 0, 'still on the login page');
    await shot(page, '01-login-wrong-password');
    await closePage(page);
  });

  test('admin logs in and sees the host summary, compatibility and charts', async () => {
    const page = await newPage();
    await login(page);
    await page.getByRole('heading', { name: /^Host: / }).waitFor();
    await page.getByRole('list', { name: 'Compatibility checks' }).locator('li').first().waitFor();
    // Two samples make a CPU value: the chart's latest value is known.
    await assertText(page.locator('.chart-latest').first(), /Host CPU \d/, 10_000);
    // The session survives a reload (sessionStorage).
    await page.reload();
    await page.getByRole('navigation', { name: 'Navigator' }).waitFor();
    await page.getByRole('heading', { name: /^Host: / }).waitFor();
    await assertText(page.locator('.chart-latest').first(), /Host CPU \d/, 10_000);
    await shot(page, '02-host-summary');
    await closePage(page);
  });

  test('the wizard validates, then creates a VM; its task shows in the strip', async () => {
    const page = await newPage();
    await login(page);
    await openVms(page);
    await page.getByRole('button', { name: 'Create VM' }).click();
    const dialog = page.getByRole('dialog', { name: 'New virtual machine' });
    // Validation before submit: no name.
    await dialog.getByRole('button', { name: 'Next' }).click();
    await assertText(dialog.locator('.field-error'), /name is required/);
    await dialog.getByLabel('Name', { exact: true }).fill('echo1');
    await dialog.getByLabel('Guest OS').selectOption('other');
    await dialog.getByRole('button', { name: 'Next' }).click();
    await dialog.getByRole('radio', { name: /datastore1/ }).check();
    await dialog.getByRole('button', { name: 'Next' }).click();
    // Too little memory is refused before the API sees it.
    await dialog.getByLabel('Memory (MiB)').fill('4');
    await dialog.getByLabel('New disk size').fill('');
    await dialog.getByRole('button', { name: 'Next' }).click();
    await assertText(dialog.locator('.field-error'), /at least 16/);
    await dialog.getByLabel('Memory (MiB)').fill('32');
    // A network adapter: on "VM Network" unless another port group is chosen.
    await dialog.getByLabel('Network adapter').check();
    await dialog.getByLabel('Port group').locator('option[value="VM Network"]').waitFor({ state: 'attached' });
    assert.equal(await dialog.getByLabel('Port group').inputValue(), 'VM Network');
    await dialog.getByRole('button', { name: 'Next' }).click();
    await dialog.getByLabel('Kernel', { exact: true }).fill(kernels.echo);
    await dialog.getByLabel('Kernel command line').fill('');
    await shot(page, '03-wizard-boot');
    await dialog.getByRole('button', { name: 'Next' }).click();
    await assertText(dialog.getByRole('definition').first(), /echo1/);
    await assertText(dialog.locator('.summary-list'), /Port group VM Network, generated MAC/);
    await dialog.getByRole('button', { name: 'Finish' }).click();
    await dialog.waitFor({ state: 'detached' });
    // The create task in the strip, then the VM in the list.
    const strip = page.getByRole('region', { name: 'Recent tasks' });
    await strip.locator('tr[data-task-kind="vm.create"]').first().waitFor();
    await strip.locator('tr[data-task-kind="vm.create"][data-task-state="success"]').first().waitFor();
    await waitState(page, 'echo1', 'poweredOff');
    const echo1 = await keeld.api('GET', '/vms/echo1');
    assert.equal(echo1.config.nics[0]?.port_group, 'VM Network');
    await shot(page, '04-vm-created');
    await closePage(page);
  });

  test('a failed action shows a notice with the API message', async () => {
    const page = await newPage();
    await login(page);
    await openVms(page);
    await page.getByRole('button', { name: 'Create VM' }).click();
    const dialog = page.getByRole('dialog', { name: 'New virtual machine' });
    await dialog.getByLabel('Name', { exact: true }).fill('broken');
    for (let i = 0; i < 2; i++) await dialog.getByRole('button', { name: 'Next' }).click();
    await dialog.getByLabel('New disk size').fill('');
    await dialog.getByRole('button', { name: 'Next' }).click();
    await dialog.getByLabel('Kernel', { exact: true }).fill('/nonexistent/keel-ui-test/vmlinuz');
    await dialog.getByRole('button', { name: 'Next' }).click();
    await dialog.getByRole('button', { name: 'Finish' }).click();
    // Refused at once (the dialog stays, with the reason) or failed as a
    // task: either way a notice says why, in the API's words.
    const notice = page.locator('[data-notice="error"]').first();
    await notice.waitFor();
    const text = await notice.innerText();
    assert.match(text, /broken/);
    assert.match(text, /vmlinuz|kernel|No such file/i);
    await shot(page, '05-failed-action-notice');
    await closePage(page);
  });

  test('power on from the list, console shows the marker and echoes input, shut down shows task progress', async (t) => {
    if (!needKvm(t)) return;
    await ensureVm('echo2', kernels.echo);
    const page = await newPage();
    await login(page);
    await openVms(page);
    await powerFromList(page, 'echo2', 'on');
    await waitState(page, 'echo2', 'poweredOn');
    const strip = page.getByRole('region', { name: 'Recent tasks' });
    await strip.locator('tr[data-task-kind="vm.power-on"]').first().waitFor();
    // The console in the browser: the boot marker, then what we type.
    await vmRow(page, 'echo2').getByRole('link', { name: 'echo2' }).click();
    await page.getByRole('tab', { name: 'Console' }).click();
    await page.locator('[data-status="connected"]').waitFor();
    const screen = page.locator('.xterm-rows');
    await assertText(screen, /KEEL-PAYLOAD-ECHO/);
    await page.locator('.xterm').click();
    await page.keyboard.type('hello-from-the-browser-42');
    await assertText(screen, /hello-from-the-browser-42/);
    await shot(page, '06-console-echo');
    // The echo guest ignores the power button: the shutdown task runs
    // (with its progress bar) until keel-vmm stops the VM.
    await page.getByRole('toolbar', { name: 'Actions of echo2' }).locator('[data-op="shutdown"]').click();
    const running = strip.locator('tr[data-task-kind="vm.shutdown"][data-task-state="running"]');
    await running.getByRole('progressbar').waitFor();
    await shot(page, '07-task-progress');
    await openVms(page);
    await waitState(page, 'echo2', 'poweredOff', 60_000);
    await closePage(page);
  });

  test('a guest that honours the power button shuts down; the list follows its state', async (t) => {
    if (!needKvm(t)) return;
    await ensureVm('button1', kernels.button);
    const page = await newPage();
    await login(page);
    await openVms(page);
    await powerFromList(page, 'button1', 'on');
    await waitState(page, 'button1', 'poweredOn');
    // Wait for the guest to be ready for the button (its marker in the log).
    await waitLog('button1', 'KEEL-PAYLOAD-READY');
    await shot(page, '08-list-powered-on');
    await powerFromList(page, 'button1', 'shutdown');
    await waitState(page, 'button1', 'poweredOff');
    const strip = page.getByRole('region', { name: 'Recent tasks' });
    await strip.locator('tr[data-task-kind="vm.shutdown"][data-task-state="success"]').first().waitFor();
    await shot(page, '09-shut-down');
    await closePage(page);
  });

  test('a ReadOnly user finds power and configuration buttons disabled', async () => {
    await ensureVm('ro-vm', kernels.echo);
    await keeld.api('POST', '/users', { name: 'viewer', password: 'viewer-password' });
    await keeld.api('PUT', '/permissions', { user: 'viewer', role: 'ReadOnly', entity: 'host' });
    const page = await newPage();
    await login(page, 'viewer', 'viewer-password');
    await openVms(page);
    await vmRow(page, 'ro-vm').waitFor();
    await page.getByLabel('Select ro-vm').check();
    const toolbar = page.getByRole('toolbar', { name: 'Virtual machine actions' });
    for (const op of ['on', 'shutdown', 'off', 'reset', 'pause', 'resume'])
      assert.ok(await toolbar.locator(`[data-op="${op}"]`).isDisabled(), `${op} is disabled`);
    assert.ok(await toolbar.getByRole('button', { name: 'Create VM' }).isDisabled());
    assert.match(
      (await toolbar.locator('[data-op="on"]').getAttribute('title')) ?? '',
      /VirtualMachine\.Interact\.Power/,
    );
    await shot(page, '10-readonly-list');
    await vmRow(page, 'ro-vm').getByRole('link', { name: 'ro-vm' }).click();
    const actions = page.getByRole('toolbar', { name: 'Actions of ro-vm' });
    assert.ok(await actions.locator('[data-op="on"]').isDisabled());
    assert.ok(await actions.getByRole('button', { name: 'Delete' }).isDisabled());
    // The API still refuses when the request is forced.
    const status = await page.evaluate(async () => {
      const r = await fetch('/api/v1/vms/ro-vm/power/on', {
        method: 'POST',
        headers: { Authorization: `Bearer ${sessionStorage.getItem('keel.token')}` },
      });
      return r.status;
    });
    assert.equal(status, 403);
    await shot(page, '11-readonly-vm');
    await closePage(page);
  });

  test('storage: capacity bars, upload with progress, download, new folder, delete', async () => {
    const page = await newPage();
    await login(page);
    await page.getByRole('navigation', { name: 'Navigator' }).getByRole('link', { name: 'Storage' }).click();
    await page.getByRole('meter', { name: 'datastore1 usage' }).waitFor();
    // New folder, then into it.
    await page.getByRole('button', { name: 'New folder' }).click();
    const dialog = page.getByRole('dialog', { name: 'New folder' });
    await dialog.getByRole('textbox').fill('iso');
    await dialog.getByRole('button', { name: 'Create' }).click();
    await page.locator('tr[data-file="iso"]').getByRole('link').click();
    await page.getByRole('navigation', { name: 'Folder' }).getByRole('link', { name: 'iso' }).waitFor();
    // Upload 3 MiB through XMLHttpRequest (the progress bar), then download it.
    const content = Buffer.alloc(3 * 1024 * 1024, 'k');
    await page.locator('#upload-input').setInputFiles({ name: 'blob.img', mimeType: 'application/octet-stream', buffer: content });
    const row = page.locator('tr[data-file="blob.img"]');
    await row.waitFor();
    await assertText(row, /3 MiB/);
    const [download] = await Promise.all([page.waitForEvent('download'), row.getByRole('link', { name: 'Download blob.img' }).click()]);
    const saved = await download.path();
    assert.equal(fs.statSync(saved).size, content.length, 'the download has the uploaded bytes');
    // A second upload of the same name is refused by the API: a notice says so.
    await page.locator('#upload-input').setInputFiles({ name: 'blob.img', mimeType: 'application/octet-stream', buffer: Buffer.from('x') });
    await assertText(page.locator('[data-notice="error"]').first(), /blob\.img/);
    await shot(page, '12-storage');
    await row.getByRole('button', { name: 'Delete blob.img' }).click();
    await page.getByRole('dialog', { name: 'Delete blob.img?' }).getByRole('button', { name: 'Delete' }).click();
    await row.waitFor({ state: 'detached' });
    await closePage(page);
  });

  test('VM page tabs, configuration editor, monitor and users pages', async () => {
    await ensureVm('tour', kernels.echo);
    const page = await newPage();
    await login(page);
    await page.goto(`${keeld.url}/#/vms/tour/config`);
    const form = page.locator('form.config-form');
    await form.getByLabel('vCPUs').fill('2');
    await form.getByLabel('Notes').fill('edited in the browser');
    await form.getByRole('button', { name: 'Save' }).click();
    await assertText(page.locator('[data-notice="info"]').first(), /Saved the configuration of tour/);
    const vm = await keeld.api('GET', '/vms/tour');
    assert.equal(vm.config.vcpus, 2);
    assert.equal(vm.config.notes, 'edited in the browser');
    await page.getByRole('tab', { name: 'Summary' }).click();
    await assertText(page.locator('.notes'), /edited in the browser/);
    await shot(page, '13-vm-summary');
    await page.getByRole('tab', { name: 'Events' }).click();
    await page.getByRole('table', { name: 'Events of tour' }).locator('tbody tr').first().waitFor();
    // Clone, then delete the clone with its confirmation.
    await page.getByRole('button', { name: 'Clone' }).click();
    await page.getByRole('dialog', { name: 'Clone tour' }).getByRole('button', { name: 'Clone' }).click();
    await page.getByRole('navigation', { name: 'Navigator' }).getByRole('link', { name: 'tour-clone' }).click();
    await page.getByRole('heading', { name: 'tour-clone' }).waitFor();
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog', { name: 'Delete tour-clone?' }).getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('heading', { name: 'Virtual Machines' }).waitFor();
    await page.getByRole('navigation', { name: 'Navigator' }).getByRole('link', { name: 'Monitor' }).click();
    await page.getByRole('table', { name: 'Tasks' }).locator('tbody tr').first().waitFor();
    await shot(page, '14-monitor');
    await page.getByRole('navigation', { name: 'Navigator' }).getByRole('link', { name: 'Users and permissions' }).click();
    await page.getByRole('table', { name: 'Permissions' }).locator('tbody tr').first().waitFor();
    // The theme toggle: system → light → dark, kept across a reload.
    await page.getByRole('button', { name: /^Theme: system/ }).click();
    await page.getByRole('button', { name: /^Theme: light/ }).click();
    await page.locator('html[data-theme="dark"]').waitFor({ state: 'attached' });
    await page.reload();
    await page.locator('html[data-theme="dark"]').waitFor({ state: 'attached' });
    await page.getByRole('table', { name: 'Permissions' }).locator('tbody tr').first().waitFor();
    await shot(page, '15-users-dark');
    await closePage(page);
  });

  test('networking: a port group added on vSwitch0 and deleted through its dialogs; a duplicate is refused by the API', async (t) => {
    const page = await newPage();
    await login(page);
    await page.getByRole('navigation', { name: 'Navigator' }).getByRole('link', { name: 'Networking' }).click();
    await page.getByRole('heading', { name: 'Networking' }).waitFor();
    await page.getByRole('table', { name: 'Host network adapters' }).locator('tbody tr').first().waitFor();
    const switches = await keeld.api('GET', '/network/switches');
    const switchTable = page.getByRole('table', { name: 'Virtual switches' });
    // The switch dialog checks the MTU and the subnet before keeld sees them.
    await page.getByRole('button', { name: 'Add standard virtual switch' }).click();
    const sd = page.getByRole('dialog', { name: 'Add standard virtual switch' });
    await sd.getByLabel('Name', { exact: true }).fill('vSwitchUi');
    await sd.getByLabel('MTU').fill('9001');
    await sd.getByLabel(/Host-only network/).check();
    await sd.getByLabel('Subnet').fill('10.78.0.1/24');
    await sd.getByRole('button', { name: 'Add' }).click();
    await assertText(sd, /MTU must be at most 9000/);
    await assertText(sd, /did you mean 10\.78\.0\.0\/24/);
    await sd.getByRole('button', { name: 'Cancel' }).click();
    await sd.waitFor({ state: 'detached' });
    if (!switches.some((s) => s.name === 'vSwitch0')) {
      // keeld could not make its default switch here (no bridges in this
      // network namespace): the port group steps need it.
      await switchTable.getByText('No virtual switches.').waitFor();
      assert.ok(await page.getByRole('button', { name: 'Add port group' }).isDisabled());
      const why = `vSwitch0 is missing (switches: ${JSON.stringify(switches)})`;
      process.stderr.write(`SKIPPED the port group steps (${why})\n`);
      t.diagnostic(why);
      await shot(page, '16-network-no-switch');
      await closePage(page);
      return;
    }
    await switchTable.locator('tr[data-switch="vSwitch0"]').waitFor();
    const groups = page.getByRole('table', { name: 'Port groups' });
    await groups.locator('tr[data-portgroup="VM Network"]').waitFor();
    // Add "UI Test 42" with VLAN 42 and a reject forged-transmits policy.
    await page.getByRole('button', { name: 'Add port group' }).click();
    const dialog = page.getByRole('dialog', { name: 'Add port group' });
    await dialog.getByLabel('Name', { exact: true }).fill('UI Test 42');
    await dialog.getByLabel('Virtual switch').selectOption('vSwitch0');
    await dialog.getByLabel('VLAN ID').fill('4095');
    await dialog.getByRole('button', { name: 'Add' }).click();
    await assertText(dialog.locator('.field-error'), /at most 4094/);
    await dialog.getByLabel('VLAN ID').fill('42');
    await dialog.getByLabel('Forged transmits').selectOption('reject');
    await shot(page, '16-port-group-dialog');
    await dialog.getByRole('button', { name: 'Add' }).click();
    await dialog.waitFor({ state: 'detached' });
    const row = groups.locator('tr[data-portgroup="UI Test 42"]');
    await assertText(row, /vSwitch0\s+42\s+.*forged transmits reject/);
    const created = await keeld.api('GET', `/network/portgroups/${encodeURIComponent('UI Test 42')}`);
    assert.equal(created.switch, 'vSwitch0');
    assert.equal(created.vlan, 42);
    assert.equal(created.policy.forged_transmits, 'reject');
    await assertText(switchTable.locator('tr[data-switch="vSwitch0"]'), /UI Test 42/);
    // The same name again: keeld refuses, the dialog stays with its words
    // and a notice says the same.
    await page.getByRole('button', { name: 'Add port group' }).click();
    await dialog.getByLabel('Name', { exact: true }).fill('UI Test 42');
    await dialog.getByRole('button', { name: 'Add' }).click();
    const notice = page.locator('[data-notice="error"] .notice-text').first();
    await assertText(notice, /Add port group UI Test 42: .+/);
    const message = (await notice.innerText()).split('Add port group UI Test 42: ')[1].trim();
    assert.match(message, /UI Test 42|exists|already|duplicate/i, `the API's reason: ${message}`);
    assert.equal((await dialog.locator('.inline-error').innerText()).trim(), message, 'the dialog shows the same message');
    await shot(page, '17-port-group-duplicate');
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    // Delete it with its confirmation.
    await row.getByRole('button', { name: 'Delete UI Test 42' }).click();
    await page.getByRole('dialog', { name: 'Delete port group UI Test 42?' }).getByRole('button', { name: 'Delete' }).click();
    await row.waitFor({ state: 'detached' });
    const left = await keeld.api('GET', '/network/portgroups');
    assert.ok(!left.some((p) => p.name === 'UI Test 42'), 'the port group is gone');
    await closePage(page);
  });

  test("a VM's Network adapters: its NIC listed, disconnected and connected, a second added and removed", async () => {
    const groups = await keeld.api('GET', '/network/portgroups');
    const onVmNetwork = groups.some((p) => p.name === 'VM Network');
    // On "VM Network" where keeld has it, else a host TAP (not created until power-on).
    const nic = onVmNetwork ? { port_group: 'VM Network' } : { tap: 'uitap0' };
    const task = await keeld.api('POST', '/vms', {
      name: 'net-vm',
      vcpus: 1,
      memory_mib: 32,
      nics: [nic],
      boot: { kernel: kernels.echo, cmdline: '' },
      guest_os: 'other',
    });
    await keeld.taskOk(task);
    const [first] = await keeld.api('GET', '/vms/net-vm/nics');
    assert.ok(first, 'the VM has its NIC');
    const page = await newPage();
    await login(page);
    await page.goto(`${keeld.url}/#/vms/net-vm/summary`);
    const table = page.getByRole('table', { name: 'Network adapters of net-vm' });
    const row0 = table.locator('tr[data-nic="0"]');
    await row0.waitFor();
    if (first.mac) await assertText(row0, new RegExp(first.mac, 'i'));
    if (onVmNetwork) assert.equal(await row0.getByLabel('Port group of NIC 0').inputValue(), 'VM Network');
    await assertText(row0, /connected/);
    // Disconnect and connect again (the link state, kept in the config while off).
    await row0.getByRole('button', { name: 'Disconnect NIC 0' }).click();
    await row0.locator('[data-connected="false"]').waitFor();
    assert.equal((await keeld.api('GET', '/vms/net-vm/nics'))[0].connected, false);
    await row0.getByRole('button', { name: 'Connect NIC 0' }).click();
    await row0.locator('[data-connected="true"]').waitFor();
    await shot(page, '18-vm-network-adapters');
    if (onVmNetwork) {
      // A second NIC through the dialog, then removed with its confirmation.
      await page.getByRole('button', { name: 'Add network adapter' }).click();
      const dialog = page.getByRole('dialog', { name: 'Add a network adapter to net-vm' });
      await dialog.getByLabel('MAC address').fill('01:00:5e:00:00:01');
      await dialog.getByRole('button', { name: 'Add' }).click();
      await assertText(dialog.locator('.field-error'), /unicast/);
      await dialog.getByLabel('MAC address').fill('');
      await dialog.getByRole('button', { name: 'Add' }).click();
      await dialog.waitFor({ state: 'detached' });
      const row1 = table.locator('tr[data-nic="1"]');
      await row1.waitFor();
      assert.equal((await keeld.api('GET', '/vms/net-vm/nics')).length, 2);
      await row1.getByRole('button', { name: 'Remove NIC 1' }).click();
      await page.getByRole('dialog', { name: 'Remove NIC 1 of net-vm?' }).getByRole('button', { name: 'Remove' }).click();
      await row1.waitFor({ state: 'detached' });
      assert.equal((await keeld.api('GET', '/vms/net-vm/nics')).length, 1);
    }
    await closePage(page);
  });

  test('narrow phone screen and dark theme', async () => {
    await ensureVm('phone-vm', kernels.echo);
    const page = await newPage({ width: 390, height: 844 }, 'dark');
    await login(page);
    // The navigator folds behind its button.
    await page.getByRole('button', { name: 'Navigator' }).click();
    await page.getByRole('navigation', { name: 'Navigator' }).getByRole('link', { name: /^Virtual Machines/ }).click();
    await vmRow(page, 'phone-vm').waitFor();
    await shot(page, '19-phone-dark');
    const wide = await page.evaluate(() =>
      [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > innerWidth + 1 && !e.closest('.table-wrap, .navigator'))
        .map((e) => `${e.tagName}.${e.className}`)
        .slice(0, 5),
    );
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 390, `no horizontal scrolling of the page (${width}px: ${wide.join(', ')})`);
    await closePage(page);
  });
});

const created = new Set();

async function ensureVm(name, kernel) {
  if (created.has(name)) return;
  await apiCreate(name, kernel);
  created.add(name);
}

async function waitLog(vm, marker) {
  const end = Date.now() + WAIT;
  for (;;) {
    const res = await fetchText(`/vms/${vm}/log`);
    if (res.includes(marker)) return;
    if (Date.now() > end) throw new Error(`${marker} not in the log of ${vm}: ${res}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function fetchText(apiPath) {
  const https = await import('node:https');
  const url = new URL(`/api/v1${apiPath}`, keeld.url);
  return new Promise((resolve, reject) => {
    https
      .get(
        url,
        {
          rejectUnauthorized: false,
          headers: { Authorization: `Basic ${Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64')}` },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve(text));
        },
      )
      .on('error', reject);
  });
}

/** Waits until the locator's text matches. */
async function assertText(locator, re, timeout = WAIT) {
  const end = Date.now() + timeout;
  let last = '';
  for (;;) {
    try {
      last = await locator.innerText({ timeout: 1000 });
      if (re.test(last)) return;
    } catch {
      // Not there yet.
    }
    if (Date.now() > end) throw new Error(`expected ${re} in ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
