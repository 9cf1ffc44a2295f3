import { defineConfig } from 'vitest/config';

// Preact's JSX through esbuild's automatic runtime: no Babel plugin needed.
export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    // `npm run dev` against a keeld on this machine: KEEL_DEV_API=https://127.0.0.1:8443
    proxy: process.env.KEEL_DEV_API
      ? {
          '/api': { target: process.env.KEEL_DEV_API, secure: false, ws: true },
          '/metrics': { target: process.env.KEEL_DEV_API, secure: false },
        }
      : undefined,
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
