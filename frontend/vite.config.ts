// The Curate UI is built into the gateway's package, so an installed wheel serves it without Node.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "../services/gateway/static",
    emptyOutDir: true,
    // No inline <script> or modulepreload polyfill: the gateway's CSP forbids inline script.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    // The API reference (Swagger UI, /docs) is a page of its own: the panels never load it.
    rollupOptions: { input: { main: "index.html", docs: "docs.html" } },
    chunkSizeWarningLimit: 2000,
  },
  server: {
    proxy: { "/api": "http://127.0.0.1:8000" },
  },
});
