/**
 * CLI <-> daemon over a Unix socket: one JSON request line from the client,
 * then JSON event lines from the daemon, the last one `result` or `error`.
 */
export type ControlRequest =
  /** progress: the client shows live progress (a terminal): the daemon sends `progress` events. Older daemons ignore it. */
  | { op: 'backup'; label?: string; reason?: string; pin?: boolean; force?: boolean; progress?: boolean }
  | { op: 'pin'; id: string; reason?: string }
  | { op: 'unpin'; id: string }
  | { op: 'status' };

export type ControlEvent =
  | { type: 'log'; level: string; msg: string; [k: string]: unknown }
  /** A run's progress (src/progress/model.ts ProgressEvent), throttled; clients that know no such type ignore it. */
  | { type: 'progress'; phase: string; store?: string; done: number; total?: number; end?: 'ok' | 'failed' }
  | { type: 'result'; data: unknown; exitCode: number }
  | { type: 'error'; reason: string; message: string; hint?: string; exitCode: number };
