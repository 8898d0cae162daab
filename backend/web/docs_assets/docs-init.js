// Starts Swagger UI on /docs. A file of its own, not an inline script: the CSP
// (default-src 'self') allows neither inline scripts nor other hosts.
"use strict";
(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The default validator badge loads an image from another host.
    validatorUrl: null,
  });
})();
