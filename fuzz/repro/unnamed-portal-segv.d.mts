// Types for the integration test that replays the reproduction's frames through Sluice.
export declare const VARIANTS: Record<string, Buffer[]>;
export declare function replay(
  target: { host: string; port: number; user: string; password: string; database: string },
  frames: Buffer[],
): Promise<{ got: string[]; died: boolean }>;
