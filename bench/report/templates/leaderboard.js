window.__errors=[];window.onerror=function(m){window.__errors.push(String(m));
var e=document.getElementById('page-errors');if(e){e.textContent=window.__errors.join('\n');}};
document.addEventListener('error',function(ev){var t=ev.target;if(t&&t.tagName==='IMG'){
window.onerror('image failed to load: '+t.alt);}},true);
document.addEventListener('DOMContentLoaded',function(){document.body.setAttribute('data-ready','1');});
