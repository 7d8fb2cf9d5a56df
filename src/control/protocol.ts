/**
 * CLI <-> daemon over a Unix socket: one JSON request line from the client,
 * then JSON event lines from the daemon, the last one `result` or `error`.
 */
export type ControlRequest =
  | { op: 'backup'; label?: string; reason?: string; pin?: boolean; force?: boolean }
  | { op: 'pin'; id: string; reason?: string }
  | { op: 'unpin'; id: string }
  | { op: 'status' };

export type ControlEvent =
  | { type: 'log'; level: string; msg: string; [k: string]: unknown }
  | { type: 'result'; data: unknown; exitCode: number }
  | { type: 'error'; reason: string; message: string; hint?: string; exitCode: number };
