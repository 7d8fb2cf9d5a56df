/** Kept equal to package.json's version by a unit test; a bundled single file has no package.json beside it. */
export const VERSION = '0.2.0';
export const TOOL_NAME = 'etcd-backupd';
