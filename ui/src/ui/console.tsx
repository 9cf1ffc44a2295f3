// A VM's serial console in the browser: xterm.js over the console
// WebSocket (binary frames both ways; the token in the query, since a
// browser cannot set headers on a WebSocket).

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'preact/hooks';

import { isDark, useDark } from '../hooks';
import { Button } from './widgets';

type Status = 'connecting' | 'connected' | 'closed';

function termTheme(dark: boolean) {
  return dark
    ? { background: '#0d1117', foreground: '#e6edf3', cursor: '#e6edf3' }
    : { background: '#ffffff', foreground: '#1f2328', cursor: '#1f2328', selectionBackground: '#b6d7ff' };
}

export function Console({ url, canType, active }: { url: string; canType: boolean; active: boolean }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>('connecting');
  const [reason, setReason] = useState('');
  const [attempt, setAttempt] = useState(0);
  const termRef = useRef<Terminal | null>(null);
  const dark = useDark();
  useEffect(() => {
    if (termRef.current) termRef.current.options.theme = termTheme(dark);
  }, [dark]);

  useEffect(() => {
    const el = box.current;
    if (!el || !active) return;
    const term = new Terminal({
      // Serial output often ends lines with a bare \n.
      convertEol: true,
      cursorBlink: true,
      fontSize: 14,
      scrollback: 5000,
      disableStdin: !canType,
      screenReaderMode: false,
      theme: termTheme(isDark()),
    });
    termRef.current = term;
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    try {
      fit.fit();
    } catch {
      // Not laid out yet: the observer fits it.
    }
    const ro = new ResizeObserver(() => {
      try {
        fit.fit();
      } catch {
        // Hidden.
      }
    });
    ro.observe(el);

    setStatus('connecting');
    setReason('');
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      setStatus('connected');
      term.focus();
    };
    ws.onmessage = (e) => {
      if (typeof e.data === 'string') term.write(e.data);
      else term.write(new Uint8Array(e.data as ArrayBuffer));
    };
    ws.onclose = (e) => {
      setStatus('closed');
      setReason(e.reason || (e.code === 1006 ? 'The connection was refused or broke (is the VM powered on?)' : ''));
    };
    const encoder = new TextEncoder();
    const input = term.onData((data) => {
      if (canType && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
    });
    const binary = term.onBinary((data) => {
      if (!canType || ws.readyState !== WebSocket.OPEN) return;
      const bytes = new Uint8Array(data.length);
      for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
      ws.send(bytes);
    });
    return () => {
      input.dispose();
      binary.dispose();
      ro.disconnect();
      ws.onclose = null;
      ws.close();
      term.dispose();
      termRef.current = null;
    };
  }, [url, canType, active, attempt]);

  const words: Record<Status, string> = {
    connecting: 'Connecting…',
    connected: canType ? 'Connected: click the console and type' : 'Connected (view only)',
    closed: `Disconnected${reason ? `: ${reason}` : ''}`,
  };
  return (
    <div class="console">
      <div class="console-bar">
        <span class={`console-status console-${status}`} role="status" data-status={status}>
          {words[status]}
        </span>
        {status === 'closed' && <Button onClick={() => setAttempt((a) => a + 1)}>Reconnect</Button>}
      </div>
      <div class="console-term" ref={box} aria-label="Serial console" role="region" data-testid="console" />
    </div>
  );
}
