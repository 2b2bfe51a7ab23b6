#!/usr/bin/perl
# Drift alerts: llm_router_alert watches the escalation rate, the fallback
# rate or the error rate of each model over a sliding window (16 slots),
# counted in the log phase.  When the rate crosses its threshold (with at
# least min= requests in the window) one warn line goes to the error log
# and llm_router_alert_firing is 1; when it is back at or below the
# threshold, one "cleared" line and the gauge is 0.  llm_router_rate shows
# the rate itself.  Each part runs its own nginx, so that the requests of
# one do not count in the rates of another.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);
use LLMRouterTest qw(only);

plan tests => 43;

# ------------------------------------------------------------ helpers

my $MODELS = <<'EOF';
llm_router_model mini  { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60;
                         escalate large; fallback large; }
llm_router_model large { url %%URL_large%%; model gpt-4o;      key sk-large; price 2.50 10.00; }
llm_router_model solo  { url %%URL_mini%%;  model gpt-4o-mini; key sk-mini;  price 0.15 0.60; }
EOF

# an nginx with these alerts, mini by default, escalation on
sub start {
    my ($alerts) = @_;
    my $t = LLMRouterTest->new;
    $t->mock('mini', key => 'sk-mini');
    $t->mock('large', key => 'sk-large');
    $t->config(<<"EOF")->run;
llm_router_zone llm 1m;
$alerts
$MODELS
log_format status '\$status';

server {
    listen 127.0.0.1:%%PORT%%;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    %%ROUTE_HEADERS%%

    location = /v1/chat/completions {
        llm_router on;
        llm_router_escalate on;
        llm_router_default mini;
        llm_router_pin solo;                    # the tests pin it
        access_log %%PREFIX%%/llm.log status;
        proxy_pass \$llm_router_url;
    }

    location = /metrics {
        llm_router_status;
    }
}
EOF
    return $t;
}

# nginx may run the log phase (where the rates are counted) just after
# the client has its answer: wait for the access log record of each
my %logged;

sub logged {
    my ($t) = @_;
    my $n = ++$logged{$t->prefix};
    my @r = $t->access_log_records('llm.log', $n);
    die "no access log record for request $n\n" unless @r >= $n;
}

# a request: its response, once nginx has logged it
sub ask {
    my ($t, @o) = @_;
    my $r = $t->ask(@o);
    logged($t);
    return $r;
}


# $n requests of a kind; each must be answered 200 by the expected mock
my %KIND = (
    good      => [[], 'mini/default mini'],
    escalated => [[headers => only('mini', 'X-Mock-Finish' => 'length')], 'large/default large'],
    fallback  => [[headers => only('mini', 'X-Mock-Status' => 500)], 'large/default large'],
);

sub send_n {
    my ($t, $n, $kind) = @_;
    my ($opts, $want) = @{ $KIND{$kind} };
    my @bad;
    for (1 .. $n) {
        my $r = ask($t, 'hi', @$opts);
        my $got = sprintf '%s/%s %s', map({ $r->{headers}{$_} // '-' } 'x-llm-model', 'x-llm-rule'),
                                   $r->{headers}{'x-mock-provider'} // '-';
        $got = "HTTP $r->{status}" unless $r->{status} == 200;
        push @bad, $got unless $got eq $want;
    }
    die "$kind requests did not go as expected: @bad\n" if @bad;
}

# the warn lines of the error log that contain $text (a plain string);
# waits a little for $want of them, then returns how many there are
sub lines {
    my ($t, $text, $want) = @_;
    my $re = qr/\[warn\] \d+#\d+: \*\d+ \Q$text\E while logging request,/;
    my $n;
    my $deadline = time + 2;
    while (1) {
        $n = () = $t->error_log =~ /$re/g;
        last if !defined $want || $n >= $want || time > $deadline;
        sleep 0.02;
    }
    return $n;
}

# every llm_router alert line (set or cleared)
sub all_alert_lines {
    my ($t) = @_;
    my $n = () = $t->error_log =~ /llm_router alert/g;
    return $n;
}


sub gauge {
    my ($t, $name, $labels) = @_;
    return $t->family($name)->{$labels} // 'none';
}

# ------------------------------------------------------------ escalation rate

{
    my $t = start('llm_router_alert escalation_rate>20% window=10s min=4;');
    my $fire = 'llm_router alert: escalation_rate is 100.0% over the last 10000 ms (4 requests), above 20.0%';
    my $clear = 'llm_router alert cleared: escalation_rate is 20.0% over the last 10000 ms (30 requests)';
    my $alert = 'alert="escalation_rate"';
    my $rate = 'rate="escalation_rate"';

    send_n($t, 3, 'escalated');
    is_deeply [all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [0, 0, '1.000'],
              'escalation_rate: 3 escalated requests, below min=4: no line, not firing, the rate is 1.000';

    send_n($t, 1, 'escalated');
    is_deeply [lines($t, $fire, 1), all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert),
               gauge($t, llm_router_rate => $rate)],
              [1, 1, 1, '1.000'],
              'escalation_rate: the 4th escalated request: one warn line, llm_router_alert_firing 1, rate 1.000';

    send_n($t, 2, 'escalated');
    is_deeply [lines($t, $fire), all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert)], [1, 1, 1],
              'escalation_rate: two more escalated requests: still one line';

    # 6 of 29 is 20.6%, 6 of 30 is 20.0%: cleared by the 24th good request
    send_n($t, 23, 'good');
    is_deeply [all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [1, 1, '0.206'],
              'escalation_rate: 23 good requests, 6 of 29 escalated (20.6%): still firing, no more lines';

    send_n($t, 1, 'good');
    is_deeply [lines($t, $clear, 1), all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert),
               gauge($t, llm_router_rate => $rate)],
              [1, 2, 0, '0.200'],
              'escalation_rate: the 24th good request, 20.0%: one "cleared" line, gauge 0';

    send_n($t, 3, 'good');
    is_deeply [lines($t, $clear), all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert)], [1, 2, 0],
              'escalation_rate: more good requests: still one "cleared" line';

    # 7 of 34 is 20.5%: crossed again, one more line
    send_n($t, 1, 'escalated');
    my $again = 'llm_router alert: escalation_rate is 20.5% over the last 10000 ms (34 requests), above 20.0%';
    is_deeply [lines($t, $again, 1), all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert)], [1, 3, 1],
              'escalation_rate: crossed again: one more line, firing again';

    is_deeply $t->family('llm_router_alert_firing'), { $alert => 1 },
              'only the configured alert has an llm_router_alert_firing gauge';
    is gauge($t, llm_router_rate => 'rate="fallback_rate"'), '0.000', 'the fallback rate is 0.000 meanwhile';

    $t->stop;
}

# ------------------------------------------------------------ fallback rate

{
    my $t = start('llm_router_alert fallback_rate>25.5% window=10s min=4;');
    my $alert = 'alert="fallback_rate"';
    my $rate = 'rate="fallback_rate"';

    send_n($t, 3, 'fallback');
    is_deeply [all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [0, 0, '1.000'],
              'fallback_rate: 3 fallbacks, below min=4: no line';

    send_n($t, 1, 'fallback');
    is_deeply [lines($t, 'llm_router alert: fallback_rate is 100.0% over the last 10000 ms (4 requests), above 25.5%', 1),
               all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [1, 1, 1, '1.000'],
              'fallback_rate: the 4th fallback: one line (threshold with a decimal), firing';

    # 4 of 15 is 26.6% (above 25.5%), 4 of 16 is 25.0%
    send_n($t, 11, 'good');
    is_deeply [all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [1, 1, '0.266'],
              'fallback_rate: 11 good requests, 26.6%: still firing, one line';

    send_n($t, 1, 'good');
    is_deeply [lines($t, 'llm_router alert cleared: fallback_rate is 25.0% over the last 10000 ms (16 requests)', 1),
               all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [1, 2, 0, '0.250'],
              'fallback_rate: the 12th good request, 25.0%: one "cleared" line, gauge 0';

    send_n($t, 2, 'good');
    is all_alert_lines($t), 2, 'fallback_rate: no more lines';

    $t->stop;
}

# ------------------------------------------------------------ error rate, per model

{
    my $t = start('llm_router_alert error_rate>50% window=10s min=2;');
    my %firing = map { $_ => qq(alert="error_rate",model="$_") } qw(mini large solo);
    my %rate = map { $_ => qq(rate="error_rate",model="$_") } qw(mini large solo);

    # mini answers 500, large answers: an error of mini, none of large
    send_n($t, 1, 'fallback');
    is_deeply [all_alert_lines($t), gauge($t, llm_router_rate => $rate{mini}), gauge($t, llm_router_rate => $rate{large})],
              [0, '1.000', '0.000'],
              'error_rate: one 500 of mini, below min=2: no line';

    send_n($t, 1, 'fallback');
    is_deeply [lines($t, 'llm_router alert: error_rate of model "mini" is 100.0% over the last 10000 ms '
                         . '(2 requests), above 50.0%', 1),
               all_alert_lines($t)],
              [1, 1],
              'error_rate: the second 500 of mini: one line naming the model';
    is_deeply $t->family('llm_router_alert_firing'), { $firing{mini} => 1, $firing{large} => 0 },
              'error_rate: llm_router_alert_firing of mini is 1, of large (which answered) 0';
    is_deeply [gauge($t, llm_router_rate => $rate{mini}), gauge($t, llm_router_rate => $rate{large})],
              ['1.000', '0.000'], 'error_rate: llm_router_rate of mini 1.000, of large 0.000';

    # 2 of 4: 50.0%, not above 50%
    send_n($t, 2, 'good');
    is_deeply [lines($t, 'llm_router alert cleared: error_rate of model "mini" is 50.0% over the last 10000 ms '
                         . '(4 requests)', 1),
               all_alert_lines($t), gauge($t, llm_router_alert_firing => $firing{mini}),
               gauge($t, llm_router_rate => $rate{mini})],
              [1, 2, 0, '0.500'],
              'error_rate: two good answers of mini, 50.0%: cleared';

    # a model without fallback: its own 429 and 500 count, a 400 does not
    my @st;
    for my $code (429, 500) {
        push @st, ask($t, 'hi', model => 'solo', headers => { 'X-Mock-Status' => $code })->{status};
    }
    is_deeply [@st, lines($t, 'llm_router alert: error_rate of model "solo" is 100.0% over the last 10000 ms '
                              . '(2 requests), above 50.0%', 1),
               all_alert_lines($t), gauge($t, llm_router_alert_firing => $firing{solo})],
              [429, 500, 1, 3, 1],
              'error_rate: a 429 and a 500 of a model without fallback: its own line';

    @st = ();
    for (1 .. 2) {
        push @st, ask($t, 'hi', model => 'solo', headers => { 'X-Mock-Status' => 400 })->{status};
    }
    is_deeply [@st, lines($t, 'llm_router alert cleared: error_rate of model "solo" is 50.0% over the last '
                              . '10000 ms (4 requests)', 1),
               all_alert_lines($t), gauge($t, llm_router_rate => $rate{solo})],
              [400, 400, 1, 4, '0.500'],
              'error_rate: two 400s are not errors: 2 of 4, cleared';

    is_deeply [gauge($t, llm_router_alert_firing => $firing{mini}), gauge($t, llm_router_alert_firing => $firing{large})],
              [0, 0], 'error_rate: the alerts of the other models are unchanged';

    $t->stop;
}

# ------------------------------------------------------------ below min

{
    my $t = start('llm_router_alert escalation_rate>10% window=10s min=6; '
                  . 'llm_router_alert fallback_rate>10% window=10s min=6;');
    send_n($t, 5, 'escalated');
    is_deeply [all_alert_lines($t), gauge($t, llm_router_alert_firing => 'alert="escalation_rate"'),
               gauge($t, llm_router_rate => 'rate="escalation_rate"')],
              [0, 0, '1.000'],
              'min=6: 5 escalated requests (100%): nothing fires';

    send_n($t, 1, 'good');
    is_deeply [lines($t, 'llm_router alert: escalation_rate is 83.3% over the last 10000 ms (6 requests), above 10.0%', 1),
               all_alert_lines($t), gauge($t, llm_router_alert_firing => 'alert="fallback_rate"'),
               gauge($t, llm_router_rate => 'rate="escalation_rate"')],
              [1, 1, 0, '0.833'],
              'min=6: the 6th request, good: the escalation alert fires at 83.3%, the fallback alert does not';

    $t->stop;
}

# ------------------------------------------------------------ the window

{
    my $t = start('llm_router_alert escalation_rate>50% window=2s min=2;');
    my $alert = 'alert="escalation_rate"';
    my $rate = 'rate="escalation_rate"';

    send_n($t, 2, 'escalated');
    is_deeply [lines($t, 'llm_router alert: escalation_rate is 100.0% over the last 2000 ms (2 requests), above 50.0%', 1),
               gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [1, 1, '1.000'],
              'window=2s: 2 escalated requests fire';

    # the slots are an eighth of a second: after 2 s none of them counts
    sleep 2.2;
    is gauge($t, llm_router_rate => $rate), '0.000', 'window=2s: 2.2 s later the rate is 0.000, the slots are old';

    send_n($t, 2, 'good');
    is_deeply [lines($t, 'llm_router alert cleared: escalation_rate is 0.0% over the last 2000 ms (2 requests)', 1),
               all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [1, 2, 0, '0.000'],
              'window=2s: two good requests, the old escalations are not counted: cleared at 0.0% of 2';

    # half of the window: what came 1.2 s ago still counts
    sleep 1.2;
    send_n($t, 2, 'escalated');
    is_deeply [all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [2, 0, '0.500'],
              'window=2s: 2 escalated 1.2 s after 2 good ones: 2 of 4, 50.0%, not above';

    sleep 1.2;
    send_n($t, 1, 'escalated');
    is_deeply [lines($t, 'llm_router alert: escalation_rate is 100.0% over the last 2000 ms (3 requests), above 50.0%', 1),
               all_alert_lines($t), gauge($t, llm_router_alert_firing => $alert), gauge($t, llm_router_rate => $rate)],
              [1, 3, 1, '1.000'],
              'window=2s: 1.2 s later the good ones are out of the window: 3 of 3 escalated, fires';

    $t->stop;
}

# ------------------------------------------------------------ configuration

my $c = LLMRouterTest->new;
my $zone = 'llm_router_zone llm 1m; llm_router_model a { url http://127.0.0.1:1/v1; model a-1; auth none; }';

sub conf_check { my ($alerts) = @_; return $c->config_error("$zone\n$alerts", '') }

is conf_check('llm_router_alert escalation_rate>20% window=5m; llm_router_alert fallback_rate>5.5% min=1; '
              . 'llm_router_alert error_rate>100% min=3 window=16ms;'),
   'passed', 'config: the three alerts, with window=, min= or both';

# window= and min= are both optional
is conf_check('llm_router_alert escalation_rate>20%;'), 'passed', 'config: an alert without window= and min=';

# (the malformed alerts have a window=, so that only the alert is wrong)
is_deeply [map { conf_check("llm_router_alert $_ window=1m;") } 'latency_rate>20%', 'escalation>20%',
                                                                'escalation_rate=20%', 'escalation_rate>20',
                                                                'escalation_rate>%', 'escalation_rate'],
          [map { qq(invalid alert "$_": escalation_rate>N%, fallback_rate>N% or error_rate>N% expected in nginx.conf:N) }
               'latency_rate>20%', 'escalation>20%', 'escalation_rate=20%', 'escalation_rate>20', 'escalation_rate>%',
               'escalation_rate'],
          'config: unknown rate names and malformed alerts';

is_deeply [map { conf_check("llm_router_alert $_ min=5;") } 'error_rate>abc%', 'error_rate>100.1%', 'error_rate>20.55%',
                                                             'error_rate>-5%', 'error_rate>1.2.3%'],
          [map { qq(invalid percentage in alert "$_" in nginx.conf:N) }
               'error_rate>abc%', 'error_rate>100.1%', 'error_rate>20.55%', 'error_rate>-5%', 'error_rate>1.2.3%'],
          'config: bad percentages';

is_deeply [map { conf_check("llm_router_alert fallback_rate>20% $_;") } 'window=abc', 'window=0', 'window=15ms',
                                                                         'window='],
          [map { qq(invalid window "$_" in "llm_router_alert" in nginx.conf:N) } 'window=abc', 'window=0', 'window=15ms',
                                                                                'window='],
          'config: bad windows (at least 16 ms, a millisecond a slot)';

is_deeply [map { conf_check("llm_router_alert fallback_rate>20% $_;") } 'min=0', 'min=x', 'min=-1'],
          [map { qq(invalid min "$_" in "llm_router_alert" in nginx.conf:N) } 'min=0', 'min=x', 'min=-1'],
          'config: bad min';

is_deeply [map { conf_check("llm_router_alert fallback_rate>20% $_;") } 'foo=1', 'window', '5m'],
          [map { qq(invalid parameter "$_" in "llm_router_alert" in nginx.conf:N) } 'foo=1', 'window', '5m'],
          'config: bad parameters';

is conf_check('llm_router_alert error_rate>20% min=5; llm_router_alert error_rate>30% window=1m;'),
   '"llm_router_alert" directive is duplicate in nginx.conf:N', 'config: the same rate twice';

is $c->config_error($zone, 'llm_router_alert error_rate>20% min=5;'),
   '"llm_router_alert" directive is not allowed here in nginx.conf:N', 'config: llm_router_alert in a location';
