// Small shared pieces: buttons that say why they are disabled, progress and
// usage bars, an accessible modal dialog, form fields, tabs, pagination.

import type { ComponentChildren, JSX } from 'preact';
import { useEffect, useId, useRef, useState } from 'preact/hooks';

import { formatBytes, formatPercent, powerLabel } from '../format';
import type { PowerState } from '../types';

type ButtonProps = JSX.HTMLAttributes<HTMLButtonElement> & {
  /** Why it is disabled (shown as its tooltip and to screen readers). */
  reason?: string;
  disabled?: boolean;
  kind?: 'primary' | 'danger' | 'plain';
  type?: 'button' | 'submit';
};

export function Button({ reason, disabled, kind = 'plain', type = 'button', children, title, ...rest }: ButtonProps) {
  const off = !!disabled || !!reason;
  return (
    <button
      type={type}
      class={`btn btn-${kind}`}
      disabled={off}
      aria-disabled={off ? 'true' : undefined}
      title={reason ?? (title as string | undefined)}
      {...rest}
    >
      {children}
    </button>
  );
}

export function ProgressBar({ value, label }: { value: number; label: string }) {
  const pct = Math.max(0, Math.min(100, Math.round(value)));
  return (
    <div class="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
      <div class="progress-fill" style={{ width: `${pct}%` }} />
      <span class="progress-text">{pct} %</span>
    </div>
  );
}

/** Used of total, as a bar and in words ("12 GiB free of 40 GiB"). */
export function UsageBar({ used, total, label }: { used: number; total: number; label: string }) {
  const frac = total > 0 ? used / total : 0;
  const level = frac > 0.9 ? 'high' : frac > 0.75 ? 'mid' : 'low';
  return (
    <div class="usage">
      <div
        class={`usage-bar usage-${level}`}
        role="meter"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={total}
        aria-valuenow={used}
        aria-valuetext={`${formatPercent(frac)} used, ${formatBytes(total - used)} free of ${formatBytes(total)}`}
      >
        <div class="usage-fill" style={{ width: `${Math.min(100, frac * 100)}%` }} />
      </div>
      <div class="usage-text">
        {formatBytes(total - used)} free of {formatBytes(total)} ({formatPercent(frac)} used)
      </div>
    </div>
  );
}

export function StateBadge({ state }: { state: PowerState }) {
  return (
    <span class={`badge state-${state}`} data-state={state}>
      <span class="dot" aria-hidden="true" />
      {powerLabel(state)}
    </span>
  );
}

/** A modal dialog: focus moves in, Tab stays inside, Escape closes, focus
 * returns to where it was. */
export function Modal({
  title,
  onClose,
  children,
  wide,
}: {
  title: string;
  onClose: () => void;
  children: ComponentChildren;
  wide?: boolean;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const id = useId();
  useEffect(() => {
    const before = document.activeElement as HTMLElement | null;
    const el = ref.current;
    const first = el?.querySelector<HTMLElement>('[autofocus], input, select, textarea, button:not([disabled])');
    first?.focus();
    return () => before?.focus?.();
  }, []);
  const onKey = (e: KeyboardEvent) => {
    if (e.key === 'Escape') {
      e.stopPropagation();
      onClose();
      return;
    }
    if (e.key !== 'Tab' || !ref.current) return;
    const items = [
      ...ref.current.querySelectorAll<HTMLElement>(
        'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex="0"]',
      ),
    ];
    if (items.length === 0) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (e.shiftKey && document.activeElement === first) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && document.activeElement === last) {
      e.preventDefault();
      first.focus();
    }
  };
  return (
    <div class="modal-backdrop" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <div
        class={`modal${wide ? ' modal-wide' : ''}`}
        role="dialog"
        aria-modal="true"
        aria-labelledby={`${id}-title`}
        ref={ref}
        onKeyDown={onKey}
      >
        <div class="modal-head">
          <h2 id={`${id}-title`}>{title}</h2>
          <button type="button" class="icon-btn" aria-label="Close" onClick={onClose}>
            ×
          </button>
        </div>
        {children}
      </div>
    </div>
  );
}

/** "Are you sure?" with the consequence spelled out. */
export function Confirm({
  title,
  message,
  action,
  danger,
  onConfirm,
  onClose,
}: {
  title: string;
  message: ComponentChildren;
  action: string;
  danger?: boolean;
  onConfirm: () => Promise<void> | void;
  onClose: () => void;
}) {
  const [busy, setBusy] = useState(false);
  return (
    <Modal title={title} onClose={onClose}>
      <div class="modal-body">{message}</div>
      <div class="modal-foot">
        <Button onClick={onClose}>Cancel</Button>
        <Button
          kind={danger ? 'danger' : 'primary'}
          disabled={busy}
          onClick={async () => {
            setBusy(true);
            try {
              await onConfirm();
            } finally {
              setBusy(false);
            }
          }}
        >
          {action}
        </Button>
      </div>
    </Modal>
  );
}

/** A labelled form field with its error (announced, tied by aria-describedby). */
export function Field({
  label,
  error,
  hint,
  children,
}: {
  label: string;
  error?: string;
  hint?: string;
  children: (props: { id: string; 'aria-invalid'?: 'true'; 'aria-describedby'?: string }) => ComponentChildren;
}) {
  const id = useId();
  const described = [error ? `${id}-err` : '', hint ? `${id}-hint` : ''].filter(Boolean).join(' ') || undefined;
  return (
    <div class={`field${error ? ' has-error' : ''}`}>
      <label for={id}>{label}</label>
      {children({ id, 'aria-invalid': error ? 'true' : undefined, 'aria-describedby': described })}
      {hint && (
        <div class="hint" id={`${id}-hint`}>
          {hint}
        </div>
      )}
      {error && (
        <div class="field-error" id={`${id}-err`} role="alert">
          {error}
        </div>
      )}
    </div>
  );
}

/** Tabs with arrow-key navigation (WAI-ARIA tabs pattern). */
export function Tabs({
  tabs,
  current,
  onSelect,
  label,
}: {
  tabs: { id: string; label: string; href?: string }[];
  current: string;
  onSelect: (id: string) => void;
  label: string;
}) {
  const refs = useRef<(HTMLAnchorElement | null)[]>([]);
  const onKey = (e: KeyboardEvent, i: number) => {
    let j = -1;
    if (e.key === 'ArrowRight') j = (i + 1) % tabs.length;
    else if (e.key === 'ArrowLeft') j = (i - 1 + tabs.length) % tabs.length;
    else if (e.key === 'Home') j = 0;
    else if (e.key === 'End') j = tabs.length - 1;
    if (j < 0) return;
    e.preventDefault();
    onSelect(tabs[j].id);
    refs.current[j]?.focus();
  };
  return (
    <div class="tabs" role="tablist" aria-label={label}>
      {tabs.map((t, i) => (
        <a
          key={t.id}
          ref={(el) => {
            refs.current[i] = el;
          }}
          role="tab"
          id={`tab-${t.id}`}
          href={t.href}
          aria-selected={t.id === current}
          aria-controls={`panel-${t.id}`}
          tabIndex={t.id === current ? 0 : -1}
          class={t.id === current ? 'tab active' : 'tab'}
          onKeyDown={(e) => onKey(e as unknown as KeyboardEvent, i)}
          onClick={(e) => {
            if (!t.href) e.preventDefault();
            onSelect(t.id);
          }}
        >
          {t.label}
        </a>
      ))}
    </div>
  );
}

export function Pagination({
  page,
  hasNewer,
  hasOlder,
  onNewer,
  onOlder,
  label,
}: {
  page: number;
  hasNewer: boolean;
  hasOlder: boolean;
  onNewer: () => void;
  onOlder: () => void;
  label: string;
}) {
  return (
    <nav class="pagination" aria-label={label}>
      <Button disabled={!hasNewer} onClick={onNewer} aria-label={`Newer ${label.toLowerCase()}`}>
        ‹ Newer
      </Button>
      <span aria-live="polite">Page {page}</span>
      <Button disabled={!hasOlder} onClick={onOlder} aria-label={`Older ${label.toLowerCase()}`}>
        Older ›
      </Button>
    </nav>
  );
}

export function InlineError({ error }: { error?: string }) {
  if (!error) return null;
  return (
    <div class="inline-error" role="alert">
      {error}
    </div>
  );
}

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  const id = useId();
  return (
    <section class="card" aria-labelledby={id}>
      <div class="card-head">
        <h2 id={id}>{title}</h2>
        {actions && <div class="card-actions">{actions}</div>}
      </div>
      <div class="card-body">{children}</div>
    </section>
  );
}

/** Name–value rows (a summary). */
export function Facts({ rows }: { rows: [string, ComponentChildren][] }) {
  return (
    <dl class="facts">
      {rows.map(([k, v]) => (
        <div class="fact" key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}
