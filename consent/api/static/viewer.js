// Starts Swagger UI in the page's container, on the document the container names. A file of its own rather
// than an inline script, so that the page runs under a Content-Security-Policy without 'unsafe-inline'.
(function () {
  var container = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: container.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Swagger UI's default sends the document's address to an outside validator: no call leaves the page.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
