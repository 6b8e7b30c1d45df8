// Search-result snippets that quote the page's text. Sphinx's search (7.4) quotes the element with
// role="main"; in sphinx-book-theme that is <main class="bd-main">, which also holds the download
// buttons (".ipynb .pdf"), the printed contents list and the page's table of contents, so a snippet
// often shows those. Quote the article (<article class="bd-article">) instead.
(() => {
  const install = () => {
    if (typeof Search === "undefined" || Search._articleOnly) return;
    const original = Search.htmlToText;
    Search.htmlToText = (htmlString, anchor) => {
      const doc = new DOMParser().parseFromString(htmlString, "text/html");
      const article = doc.querySelector("article.bd-article");
      if (!article) return original(htmlString, anchor);
      article.querySelectorAll(".headerlink, script, style").forEach((el) => el.remove());
      let block = null;
      try { block = anchor ? article.querySelector(anchor) : null; } catch (e) { block = null; }
      return (block || article).textContent;
    };
    Search._articleOnly = true;
  };
  install();
  document.addEventListener("DOMContentLoaded", install);
})();
