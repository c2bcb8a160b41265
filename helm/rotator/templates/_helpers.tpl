{{/* Chart name, truncated to the 63 characters Kubernetes allows in names. */}}
{{- define "rotator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless overridden. */}}
{{- define "rotator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rotator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "rotator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rotator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rotator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rotator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "rotator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The pod spec shared by the CronJob and the Deployment; "args" is the rotator command line. */}}
{{- define "rotator.podSpec" -}}
serviceAccountName: {{ include "rotator.serviceAccountName" .root }}
automountServiceAccountToken: {{ .root.Values.serviceAccount.automountToken }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- if .restartPolicy }}
restartPolicy: {{ .restartPolicy }}
{{- end }}
containers:
  - name: rotator
    image: {{ include "rotator.image" .root | quote }}
    imagePullPolicy: {{ .root.Values.image.pullPolicy }}
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      {{- if .logFormat }}
      - name: ROTATOR_LOG_FORMAT
        value: {{ .logFormat | quote }}
      {{- end }}
      {{- if and (not .root.Values.secrets.kmsKeyId) (ne .root.Values.mode "authz") }}
      - name: ROTATOR_KEYSTORE_PASSPHRASE_FILE
        value: /var/run/secrets/rotator/passphrase
      {{- end }}
      {{- if .root.Values.revocation.password.existingSecret }}
      - name: ROTATOR_REVOCATION_PASSWORD_FILE
        value: /var/run/secrets/rotator-redis/password
      {{- end }}
      {{- with .root.Values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .ports }}
    ports:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .probes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    securityContext:
      {{- toYaml .root.Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml .root.Values.resources | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/rotator
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- if and (not .root.Values.secrets.kmsKeyId) (ne .root.Values.mode "authz") }}
      - name: passphrase
        mountPath: /var/run/secrets/rotator
        readOnly: true
      {{- end }}
      {{- if .root.Values.revocation.password.existingSecret }}
      - name: redis-password
        mountPath: /var/run/secrets/rotator-redis
        readOnly: true
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "rotator.fullname" .root }}
  - name: tmp
    emptyDir:
      sizeLimit: 16Mi
  {{- if and (not .root.Values.secrets.kmsKeyId) (ne .root.Values.mode "authz") }}
  - name: passphrase
    secret:
      secretName: {{ .root.Values.secrets.passphrase.existingSecret }}
      defaultMode: 0440
      items:
        - key: {{ .root.Values.secrets.passphrase.key }}
          path: passphrase
  {{- end }}
  {{- with .root.Values.revocation.password }}
  {{- if .existingSecret }}
  - name: redis-password
    secret:
      secretName: {{ .existingSecret }}
      defaultMode: 0440
      items:
        - key: {{ .key }}
          path: password
  {{- end }}
  {{- end }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
