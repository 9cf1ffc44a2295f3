# /etc/profile of Keel's test guest. /init is a shell script, not an init
# daemon, so the signal-based poweroff/reboot would reach nobody: act at once.
alias poweroff='sync; poweroff -f'
alias reboot='sync; reboot -f'
alias halt='sync; poweroff -f'
export PS1='keel-guest:\w# '
