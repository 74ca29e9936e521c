#compdef cmcache

_cmcache_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _CMCACHE_COMPLETE=complete_zsh cmcache)
}

compdef _cmcache_completion cmcache
